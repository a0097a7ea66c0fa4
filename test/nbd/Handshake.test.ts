import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Handshake, type HandshakeAction, type HandshakeConfig } from '../../src/nbd/Handshake.js';
import { decodeOptionReply, encodeInfoRequest, encodeMetaContextRequest, encodeOptionRequest, type OptionReply } from '../../src/nbd/optionCodec.js';
import * as P from '../../src/nbd/protocol.js';
import { fcSeed } from '../helpers/tools.js';

const cfg = (over: Partial<HandshakeConfig> = {}): HandshakeConfig => ({
  exports: [
    { name: 'a', description: 'disk a', size: 1 << 20, flags: P.TFLAG_HAS_FLAGS | P.TFLAG_SEND_FLUSH, blockSizes: { minimum: 1, preferred: 4096, maximum: P.MAX_PAYLOAD } },
    { name: 'b', size: 4096, flags: P.TFLAG_HAS_FLAGS | P.TFLAG_READ_ONLY, blockSizes: { minimum: 1, preferred: 4096, maximum: P.MAX_PAYLOAD } },
  ],
  tls: 'off',
  ...over,
});

const flags = (f = P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(f, 0);
  return b;
};

/** Start a machine past the greeting. */
function started(config = cfg()): Handshake {
  const h = new Handshake(config);
  const a = h.start();
  assert.equal(a.length, 1);
  assert.equal(a[0]!.type, 'send');
  assert.deepEqual(h.handle({ type: 'data', bytes: flags() }), []);
  return h;
}

function replies(actions: HandshakeAction[]): OptionReply[] {
  const bytes = Buffer.concat(actions.filter((a) => a.type === 'send').map((a) => (a as { bytes: Buffer }).bytes));
  const out: OptionReply[] = [];
  let off = 0;
  while (off < bytes.length) {
    const d = decodeOptionReply(bytes, off)!;
    out.push(d.reply);
    off += d.size;
  }
  return out;
}

const opt = (h: Handshake, option: number, data?: Buffer): HandshakeAction[] => h.handle({ type: 'data', bytes: encodeOptionRequest(option, data) });

test('unknown client flags or a non-fixed-newstyle client are disconnected', () => {
  for (const f of [0, 0x4 | 1]) {
    const h = new Handshake(cfg());
    h.start();
    const a = h.handle({ type: 'data', bytes: flags(f) });
    assert.equal(a[0]!.type, 'close');
    assert.ok(h.finished);
  }
});

test('LIST returns every export then ACK; LIST with data is INVALID', () => {
  const h = started();
  const r = replies(opt(h, P.OPT_LIST));
  assert.deepEqual(r.map((x) => x.type), [P.REP_SERVER, P.REP_SERVER, P.REP_ACK]);
  assert.equal(r[0]!.data.subarray(4, 5).toString(), 'a');
  assert.equal(replies(opt(h, P.OPT_LIST, Buffer.from('x')))[0]!.type, P.REP_ERR_INVALID);
});

test('unknown options get ERR_UNSUP and the session continues', () => {
  const h = started();
  assert.equal(replies(opt(h, 4))[0]!.type, P.REP_ERR_UNSUP);
  assert.equal(replies(opt(h, 0xdeadbeef))[0]!.type, P.REP_ERR_UNSUP);
  assert.equal(replies(opt(h, P.OPT_LIST)).at(-1)!.type, P.REP_ACK);
});

test('INFO answers export, name, description, block size; unknown export is ERR_UNKNOWN', () => {
  const h = started();
  const r = replies(opt(h, P.OPT_INFO, encodeInfoRequest('a', [P.INFO_NAME, P.INFO_DESCRIPTION, P.INFO_BLOCK_SIZE])));
  const infos = r.filter((x) => x.type === P.REP_INFO).map((x) => x.data.readUInt16BE(0));
  assert.deepEqual(infos.sort(), [P.INFO_EXPORT, P.INFO_NAME, P.INFO_DESCRIPTION, P.INFO_BLOCK_SIZE].sort());
  assert.equal(r.at(-1)!.type, P.REP_ACK);
  const exp = r.find((x) => x.type === P.REP_INFO && x.data.readUInt16BE(0) === P.INFO_EXPORT)!;
  assert.equal(Number(exp.data.readBigUInt64BE(2)), 1 << 20);
  assert.equal(replies(opt(h, P.OPT_INFO, encodeInfoRequest('zzz')))[0]!.type, P.REP_ERR_UNKNOWN);
  const bad = encodeInfoRequest('a', [1]);
  bad.writeUInt32BE(999, 0);
  assert.equal(replies(opt(h, P.OPT_GO, bad))[0]!.type, P.REP_ERR_INVALID);
  assert.ok(!h.finished);
});

test('GO enters transmission with DF only when structured replies were negotiated, and passes on pipelined bytes', () => {
  const h = started();
  const go = Buffer.concat([encodeOptionRequest(P.OPT_GO, encodeInfoRequest('a')), Buffer.from('pipelined')]);
  const a = h.handle({ type: 'data', bytes: go });
  const t = a.find((x) => x.type === 'transmission');
  assert.ok(t && t.type === 'transmission');
  assert.equal(t.export.name, 'a');
  assert.equal(t.structured, false);
  assert.equal(t.flags & P.TFLAG_SEND_DF, 0);
  assert.equal(t.rest.toString(), 'pipelined');
  assert.ok(h.finished);

  const h2 = started();
  assert.equal(replies(opt(h2, P.OPT_STRUCTURED_REPLY))[0]!.type, P.REP_ACK);
  const t2 = opt(h2, P.OPT_GO, encodeInfoRequest('')).find((x) => x.type === 'transmission');
  assert.ok(t2 && t2.type === 'transmission');
  assert.equal(t2.export.name, 'a', 'empty name selects the default (first) export');
  assert.ok(t2.flags & P.TFLAG_SEND_DF);
  assert.ok(t2.structured);
});

test('EXPORT_NAME: known export answers size+flags (+124 zeroes unless NO_ZEROES); unknown disconnects', () => {
  const h = new Handshake(cfg());
  h.start();
  h.handle({ type: 'data', bytes: flags(P.FLAG_C_FIXED_NEWSTYLE) });
  const a = opt(h, P.OPT_EXPORT_NAME, Buffer.from('b'));
  const send = a.find((x) => x.type === 'send') as { bytes: Buffer };
  assert.equal(send.bytes.length, 134);
  assert.equal(Number(send.bytes.readBigUInt64BE(0)), 4096);
  assert.ok(send.bytes.readUInt16BE(8) & P.TFLAG_READ_ONLY);
  assert.ok(a.some((x) => x.type === 'transmission'));
  const h2 = started();
  assert.equal(opt(h2, P.OPT_EXPORT_NAME, Buffer.from('nope'))[0]!.type, 'close');
});

test('ABORT is acknowledged then closes without being a violation', () => {
  const h = started();
  const a = opt(h, P.OPT_ABORT);
  assert.equal(replies(a)[0]!.type, P.REP_ACK);
  const c = a.find((x) => x.type === 'close');
  assert.ok(c && c.type === 'close' && !c.violation);
});

test('garbage instead of IHAVEOPT is a hard disconnect', () => {
  const h = started();
  const a = h.handle({ type: 'data', bytes: Buffer.alloc(16, 0x41) });
  assert.equal(a[0]!.type, 'close');
});

test('options are parsed across arbitrary byte splits', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), (cuts) => {
      const h = started();
      const stream = Buffer.concat([encodeOptionRequest(P.OPT_LIST), encodeOptionRequest(P.OPT_STRUCTURED_REPLY), encodeOptionRequest(P.OPT_GO, encodeInfoRequest('b'))]);
      const actions: HandshakeAction[] = [];
      let pos = 0;
      for (const c of cuts) {
        if (pos >= stream.length) break;
        actions.push(...h.handle({ type: 'data', bytes: stream.subarray(pos, pos + c) }));
        pos += c;
      }
      if (pos < stream.length) actions.push(...h.handle({ type: 'data', bytes: stream.subarray(pos) }));
      const t = actions.find((x) => x.type === 'transmission');
      assert.ok(t && t.type === 'transmission' && t.export.name === 'b' && t.structured);
    }),
    { seed: fcSeed() },
  );
});

test('meta contexts: need structured replies; SET resolves via the driver and is kept only for the same export', () => {
  const h = started();
  assert.equal(replies(opt(h, P.OPT_SET_META_CONTEXT, encodeMetaContextRequest('a', ['base:allocation'])))[0]!.type, P.REP_ERR_INVALID);
  opt(h, P.OPT_STRUCTURED_REPLY);
  const a = opt(h, P.OPT_SET_META_CONTEXT, encodeMetaContextRequest('a', ['base:allocation', 'tidemark:changes:x']));
  assert.deepEqual(a, [{ type: 'resolveMeta', mode: 'set', exportName: 'a', queries: ['base:allocation', 'tidemark:changes:x'] }]);
  // Bytes arriving while resolution is pending are held, not processed.
  assert.deepEqual(h.handle({ type: 'data', bytes: encodeOptionRequest(P.OPT_LIST) }), []);
  const r = h.handle({ type: 'metaResolved', names: ['base:allocation'] });
  const rr = replies(r);
  assert.deepEqual(rr.map((x) => x.type), [P.REP_META_CONTEXT, P.REP_ACK, P.REP_SERVER, P.REP_SERVER, P.REP_ACK]);
  assert.equal(rr[0]!.data.readUInt32BE(0), 1);
  assert.equal(rr[0]!.data.subarray(4).toString(), 'base:allocation');
  const t = opt(h, P.OPT_GO, encodeInfoRequest('a')).find((x) => x.type === 'transmission');
  assert.ok(t && t.type === 'transmission');
  assert.deepEqual(t.contexts, [{ id: 1, name: 'base:allocation' }]);

  const h2 = started();
  opt(h2, P.OPT_STRUCTURED_REPLY);
  opt(h2, P.OPT_SET_META_CONTEXT, encodeMetaContextRequest('a', ['base:allocation']));
  h2.handle({ type: 'metaResolved', names: ['base:allocation'] });
  const t2 = opt(h2, P.OPT_GO, encodeInfoRequest('b')).find((x) => x.type === 'transmission');
  assert.ok(t2 && t2.type === 'transmission');
  assert.deepEqual(t2.contexts, [], 'contexts chosen for export a do not apply to export b');
});

test('meta context: unknown export ERR_UNKNOWN, query without namespace INVALID, LIST replies with id 0', () => {
  const h = started();
  opt(h, P.OPT_STRUCTURED_REPLY);
  assert.equal(replies(opt(h, P.OPT_LIST_META_CONTEXT, encodeMetaContextRequest('zz', [])))[0]!.type, P.REP_ERR_UNKNOWN);
  assert.equal(replies(opt(h, P.OPT_LIST_META_CONTEXT, encodeMetaContextRequest('a', ['nocolon'])))[0]!.type, P.REP_ERR_INVALID);
  const a = opt(h, P.OPT_LIST_META_CONTEXT, encodeMetaContextRequest('a', []));
  assert.equal(a[0]!.type, 'resolveMeta');
  const r = replies(h.handle({ type: 'metaResolved', names: ['base:allocation', 'tidemark:changes:1'] }));
  assert.deepEqual(r.map((x) => [x.type, x.data.length ? x.data.readUInt32BE(0) : -1]), [[P.REP_META_CONTEXT, 0], [P.REP_META_CONTEXT, 0], [P.REP_ACK, -1]]);
});

test('TLS required: options before STARTTLS get TLS_REQD, EXPORT_NAME disconnects, STARTTLS resets state', () => {
  const h = started(cfg({ tls: 'required' }));
  assert.equal(replies(opt(h, P.OPT_LIST))[0]!.type, P.REP_ERR_TLS_REQD);
  assert.equal(replies(opt(h, P.OPT_GO, encodeInfoRequest('a')))[0]!.type, P.REP_ERR_TLS_REQD);
  assert.equal(replies(opt(h, P.OPT_STARTTLS, Buffer.from('x')))[0]!.type, P.REP_ERR_INVALID);
  const a = opt(h, P.OPT_STARTTLS);
  assert.equal(replies(a)[0]!.type, P.REP_ACK);
  assert.equal(a.at(-1)!.type, 'startTls');
  // plaintext before the TLS layer is up is a violation
  const h2 = started(cfg({ tls: 'required' }));
  opt(h2, P.OPT_STARTTLS);
  assert.equal(opt(h2, P.OPT_LIST)[0]!.type, 'close');
  // after TLS: everything works, a second STARTTLS is INVALID
  h.handle({ type: 'tlsEstablished' });
  assert.ok(h.tls);
  assert.equal(replies(opt(h, P.OPT_STARTTLS))[0]!.type, P.REP_ERR_INVALID);
  assert.equal(replies(opt(h, P.OPT_LIST)).at(-1)!.type, P.REP_ACK);
  const h3 = started(cfg({ tls: 'required' }));
  assert.equal(opt(h3, P.OPT_EXPORT_NAME, Buffer.from('a'))[0]!.type, 'close');
});

test('STARTTLS discards structured replies negotiated before it; TLS off answers POLICY', () => {
  const h = started(cfg({ tls: 'allowed' }));
  opt(h, P.OPT_STRUCTURED_REPLY);
  opt(h, P.OPT_STARTTLS);
  h.handle({ type: 'tlsEstablished' });
  const t = opt(h, P.OPT_GO, encodeInfoRequest('a')).find((x) => x.type === 'transmission');
  assert.ok(t && t.type === 'transmission' && !t.structured);
  assert.equal(replies(opt(started(), P.OPT_STARTTLS))[0]!.type, P.REP_ERR_POLICY);
});

test('oversized option data is skipped with ERR_TOO_BIG; beyond the skip limit it disconnects', () => {
  const h = started(cfg({ maxOptionData: 100, maxSkippableOptionData: 1000 }));
  const big = encodeOptionRequest(P.OPT_GO, Buffer.alloc(500));
  assert.deepEqual(h.handle({ type: 'data', bytes: big.subarray(0, 200) }), []);
  const r = replies(h.handle({ type: 'data', bytes: Buffer.concat([big.subarray(200), encodeOptionRequest(P.OPT_LIST)]) }));
  assert.deepEqual(r.map((x) => x.type), [P.REP_ERR_TOO_BIG, P.REP_SERVER, P.REP_SERVER, P.REP_ACK]);
  const hdr = encodeOptionRequest(P.OPT_GO);
  hdr.writeUInt32BE(5000, 12);
  assert.equal(h.handle({ type: 'data', bytes: hdr })[0]!.type, 'close');
});

test('after shutdown options get ERR_SHUTDOWN; random byte streams never throw', () => {
  const h = started();
  h.handle({ type: 'shutdown' });
  assert.equal(replies(opt(h, P.OPT_LIST))[0]!.type, P.REP_ERR_SHUTDOWN);
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), fc.boolean(), (chunks, withOpt) => {
      const m = started();
      if (withOpt) m.handle({ type: 'data', bytes: encodeOptionRequest(P.OPT_STRUCTURED_REPLY) });
      for (const c of chunks) {
        const acts = m.handle({ type: 'data', bytes: Buffer.from(c) });
        for (const a of acts) if (a.type === 'resolveMeta') m.handle({ type: 'metaResolved', names: [] });
      }
    }),
    { seed: fcSeed() },
  );
});
