import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fcSeed } from '../helpers/tools.js';
import { QgaDecoder, encodeQgaCommand, interpretQgaMessage, type QgaEvent } from '../../src/vm/QgaDecoder.js';

const messages = (evs: QgaEvent[]) => evs.filter((e) => e.type === 'message').map((e) => (e as { value: unknown }).value);

test('QgaDecoder: objects split anywhere (strings with braces, escapes, UTF-8) come out whole and in order', () => {
  const json = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small' }, fc.string({ unit: 'binary' }), fc.integer(), fc.boolean(), fc.constant(null), fc.array(tie('value'), { maxLength: 3 }), tie('object')),
    object: fc.dictionary(fc.string({ unit: 'binary' }), tie('value'), { maxKeys: 3 }),
  })).object;
  fc.assert(fc.property(fc.array(json, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 8 }), (objs, cuts) => {
    const wire = Buffer.concat(objs.map((o, i) => Buffer.from(`${i % 2 ? '\n' : ''}${JSON.stringify(o)}\r\n`)));
    const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
    const d = new QgaDecoder();
    const evs: QgaEvent[] = [];
    let at = 0;
    for (const p of [...points, wire.length]) {
      evs.push(...d.push(wire.subarray(at, p)));
      at = p;
    }
    assert.deepEqual(messages(evs), objs.map((o) => JSON.parse(JSON.stringify(o))));
    assert.ok(evs.every((e) => e.type === 'message'));
  }), { seed: fcSeed() });
});

test('QgaDecoder: 0xFF drops a partial object and is reported; stale bytes before it are ignored', () => {
  const d = new QgaDecoder();
  const evs = d.push(Buffer.concat([Buffer.from('"x"}{"return": {"a": "}{'), Buffer.from([0xff]), Buffer.from('{"return": 7}\n')]));
  assert.deepEqual(evs.map((e) => e.type), ['delimiter', 'message']);
  assert.deepEqual(messages(evs), [{ return: 7 }]);
});

test('QgaDecoder: an oversized object (hostile guest) is dropped without buffering it, then decoding resumes', () => {
  const d = new QgaDecoder(100);
  const big = `{"return": "${'x'.repeat(1000)}"}`;
  const evs: QgaEvent[] = [];
  for (let i = 0; i < big.length; i += 37) evs.push(...d.push(Buffer.from(big.slice(i, i + 37))));
  evs.push(...d.push(Buffer.from('{"return": 1}')));
  assert.equal(evs.length, 2);
  assert.equal(evs[0]!.type, 'garbage');
  assert.match((evs[0] as { reason: string }).reason, /longer than 100 bytes/);
  assert.deepEqual(messages(evs), [{ return: 1 }]);
  assert.deepEqual(messages(d.push(Buffer.from('{"a": tru}'))), []);
});

test('encodeQgaCommand and interpretQgaMessage', () => {
  assert.equal(encodeQgaCommand('guest-ping').toString(), '{"execute":"guest-ping"}\n');
  assert.equal(encodeQgaCommand('guest-sync', { id: 5 }).toString(), '{"execute":"guest-sync","arguments":{"id":5}}\n');
  assert.deepEqual(interpretQgaMessage({ return: 3 }), { ok: true, value: 3 });
  assert.deepEqual(interpretQgaMessage({ return: {} }), { ok: true, value: {} });
  assert.deepEqual(interpretQgaMessage({ error: { class: 'GenericError', desc: 'no' } }), { ok: false, errorClass: 'GenericError', desc: 'no' });
  assert.equal(interpretQgaMessage({ event: 'X' }), undefined);
  assert.equal(interpretQgaMessage([1]), undefined);
  assert.equal(interpretQgaMessage('return'), undefined);
});
