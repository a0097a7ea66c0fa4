import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReply,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  encodeServerReply,
} from '../../src/nbd/optionCodec.js';
import {
  decodeReplyHeader,
  decodeRequestHeader,
  encodeBlockStatus,
  encodeErrorChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeRequestHeader,
  encodeSimpleReply,
} from '../../src/nbd/transmissionCodec.js';
import { NbdOptionFormatError } from '../../src/nbd/errors.js';
import * as P from '../../src/nbd/protocol.js';
import { fcSeed } from '../helpers/tools.js';

test('greeting is NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES', () => {
  const g = encodeGreeting();
  assert.equal(g.length, 18);
  assert.equal(g.subarray(0, 8).toString('latin1'), 'NBDMAGIC');
  assert.equal(g.subarray(8, 16).toString('latin1'), 'IHAVEOPT');
  assert.equal(g.readUInt16BE(16), 3);
});

test('option request header round-trips and a wrong magic is flagged', () => {
  const r = encodeOptionRequest(P.OPT_GO, Buffer.from('abc'));
  assert.deepEqual(decodeOptionHeader(r), { magicOk: true, option: P.OPT_GO, length: 3 });
  r[0] ^= 1;
  assert.equal(decodeOptionHeader(r).magicOk, false);
});

test('option replies: server list entry, info export, block size, export-name reply layout', () => {
  const s = decodeOptionReply(encodeServerReply(P.OPT_LIST, 'disk', 'a disk'))!;
  assert.equal(s.reply.type, P.REP_SERVER);
  assert.equal(s.reply.data.readUInt32BE(0), 4);
  assert.equal(s.reply.data.subarray(4).toString(), 'diska disk');
  const e = decodeOptionReply(encodeInfoExport(P.OPT_GO, 2 ** 42 + 512, 0x1234))!.reply;
  assert.equal(e.type, P.REP_INFO);
  assert.equal(e.data.length, 12);
  assert.equal(Number(e.data.readBigUInt64BE(2)), 2 ** 42 + 512);
  assert.equal(e.data.readUInt16BE(10), 0x1234);
  const b = decodeOptionReply(encodeInfoBlockSize(P.OPT_INFO, { minimum: 1, preferred: 4096, maximum: P.MAX_PAYLOAD }))!.reply;
  assert.deepEqual([b.data.readUInt16BE(0), b.data.readUInt32BE(2), b.data.readUInt32BE(6), b.data.readUInt32BE(10)], [3, 1, 4096, P.MAX_PAYLOAD]);
  assert.equal(encodeExportNameReply(10, 1, false).length, 134);
  assert.equal(encodeExportNameReply(10, 1, true).length, 10);
});

test('info request decodes and rejects lengths that run past the data', () => {
  assert.deepEqual(decodeInfoRequest(P.OPT_GO, encodeInfoRequest('vm1', [3, 1, 3])), { name: 'vm1', infos: [3, 1] });
  const bad = encodeInfoRequest('vm1', [3]);
  bad.writeUInt32BE(100, 0);
  assert.throws(() => decodeInfoRequest(P.OPT_GO, bad), NbdOptionFormatError);
  assert.throws(() => decodeInfoRequest(P.OPT_GO, Buffer.alloc(3)), NbdOptionFormatError);
  const trailing = Buffer.concat([encodeInfoRequest('x', []), Buffer.alloc(1)]);
  assert.throws(() => decodeInfoRequest(P.OPT_GO, trailing), NbdOptionFormatError);
});

test('strings: invalid UTF-8, NUL and over-long names are rejected', () => {
  assert.throws(() => decodeString(1, Buffer.from([0xff, 0xfe]), 'name'), /UTF-8/);
  assert.throws(() => decodeString(1, Buffer.from('a\0b'), 'name'), /NUL/);
  assert.throws(() => decodeString(1, Buffer.alloc(4097, 0x61), 'name'), /4096/);
  assert.equal(decodeString(1, Buffer.from('ünïcode'), 'name'), 'ünïcode');
});

test('meta context request round-trips (property) and malformed ones never crash', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0')), fc.array(fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0')), { maxLength: 6 }), (name, queries) => {
      assert.deepEqual(decodeMetaContextRequest(P.OPT_SET_META_CONTEXT, encodeMetaContextRequest(name, queries)), { exportName: name, queries });
    }),
    { seed: fcSeed() },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodeMetaContextRequest(P.OPT_LIST_META_CONTEXT, Buffer.from(bytes));
      } catch (err) {
        assert.ok(err instanceof NbdOptionFormatError, String(err));
      }
    }),
    { seed: fcSeed() },
  );
  // A huge query count is rejected before any loop runs.
  const huge = encodeMetaContextRequest('x', []);
  huge.writeUInt32BE(0xffffffff, 5);
  assert.throws(() => decodeMetaContextRequest(P.OPT_SET_META_CONTEXT, huge), /cannot fit/);
});

test('request header round-trips for any 64-bit handle and offset up to 2^53', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.maxSafeNat(), fc.nat({ max: 0xffffffff }), (type, flags, handle, offset, length) => {
      const h = decodeRequestHeader(encodeRequestHeader(type, flags, handle, offset, length));
      assert.deepEqual(h, { magicOk: true, type, flags, handle, offset, length });
    }),
    { seed: fcSeed() },
  );
});

test('an offset above 2^53 decodes to something beyond any export', () => {
  const b = encodeRequestHeader(0, 0, 1n, 0, 512);
  b.writeUInt32BE(0xffffffff, 16);
  assert.ok(decodeRequestHeader(b).offset > Number.MAX_SAFE_INTEGER);
});

test('reply encoders produce headers a client decodes', () => {
  assert.deepEqual(decodeReplyHeader(encodeSimpleReply(22, 7n)), { kind: 'simple', error: 22, handle: 7n, size: 16 });
  const d = encodeOffsetDataHeader(true, 9n, 2 ** 40, 4096);
  assert.deepEqual(decodeReplyHeader(d), { kind: 'structured', flags: 1, type: P.REPLY_TYPE_OFFSET_DATA, handle: 9n, length: 4104, size: 20 });
  assert.equal(Number(d.readBigUInt64BE(20)), 2 ** 40);
  const h = encodeOffsetHole(false, 9n, 512, 1024);
  assert.equal(h.length, 32);
  assert.equal(h.readUInt32BE(16), 12);
  assert.equal(h.readUInt32BE(28), 1024);
  const bs = encodeBlockStatus(true, 3n, 5, [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }]);
  assert.equal(bs.readUInt32BE(16), 4 + 16);
  assert.deepEqual([bs.readUInt32BE(20), bs.readUInt32BE(24), bs.readUInt32BE(28), bs.readUInt32BE(32)], [5, 4096, 3, 512]);
  const e = encodeErrorChunk(4n, 5, 'boom');
  assert.equal(e.readUInt16BE(6), P.REPLY_TYPE_ERROR);
  assert.equal(e.readUInt32BE(16), 10);
  assert.equal(e.readUInt32BE(20), 5);
  assert.equal(e.subarray(26).toString(), 'boom');
  assert.throws(() => decodeReplyHeader(Buffer.alloc(20)), /bad reply magic/);
});
