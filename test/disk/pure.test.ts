import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fcSeed } from '../helpers/tools.js';
import { sniffFormat } from '../../src/disk/sniffFormat.js';
import { nonZeroRuns, isZero } from '../../src/disk/nonZeroRuns.js';
import { firstDifference } from '../../src/disk/firstDifference.js';
import { parseSize } from '../../src/util/size.js';
import { ExitCode } from '../../src/errors.js';

test('sniffFormat: VHDX by signature, raw otherwise, foreign formats named', () => {
  const head = (text: string | Buffer, size = 1024, at = 0) => {
    const b = Buffer.alloc(size);
    (typeof text === 'string' ? Buffer.from(text, 'latin1') : text).copy(b, at);
    return b;
  };
  assert.deepEqual(sniffFormat(head('vhdxfile')), { kind: 'vhdx' });
  assert.deepEqual(sniffFormat(head('vhdxfilX')), { kind: 'raw' });
  assert.deepEqual(sniffFormat(Buffer.alloc(0)), { kind: 'raw' });
  assert.deepEqual(sniffFormat(Buffer.from('vhdx')), { kind: 'raw' }, 'a 4-byte file cannot be a VHDX');
  assert.deepEqual(sniffFormat(head(Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]))), { kind: 'foreign', format: 'qcow2' });
  assert.deepEqual(sniffFormat(head('KDMV')), { kind: 'foreign', format: 'VMDK' });
  assert.deepEqual(sniffFormat(head('# Disk DescriptorFile\n')), { kind: 'foreign', format: 'VMDK' });
  assert.deepEqual(sniffFormat(head('conectix')), { kind: 'foreign', format: 'VHD' });
  const vdi = Buffer.alloc(1024);
  vdi.writeUInt32LE(0xbeda107f, 0x40);
  assert.deepEqual(sniffFormat(vdi), { kind: 'foreign', format: 'VDI' });
  assert.deepEqual(sniffFormat(Buffer.alloc(1024), head('conectix', 512)), { kind: 'foreign', format: 'VHD' }, 'fixed VHD: footer at the end');
  // A VHDX whose first 8 bytes were overwritten still has its headers and region table.
  const damaged = Buffer.alloc(0x30008);
  damaged.write('head', 0x10000, 'latin1');
  damaged.write('head', 0x20000, 'latin1');
  damaged.write('regi', 0x30000, 'latin1');
  assert.deepEqual(sniffFormat(damaged), { kind: 'damaged-vhdx' });
  damaged.write('vhdxfile', 0, 'latin1');
  assert.deepEqual(sniffFormat(damaged), { kind: 'vhdx' });
});

/** Reference model: granules of `g` aligned to base, non-zero if any byte is. */
function modelRuns(buf: Buffer, g: number, base: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let pos = 0;
  while (pos < buf.length) {
    const next = Math.min(buf.length, pos + g - ((base + pos) % g));
    const nz = buf.subarray(pos, next).some((x) => x !== 0);
    const last = runs[runs.length - 1];
    if (nz) {
      if (last && last[1] === pos) last[1] = next;
      else runs.push([pos, next]);
    }
    pos = next;
  }
  return runs;
}

test('nonZeroRuns matches a byte-by-byte model (property)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 5000 }),
      fc.array(fc.tuple(fc.nat(4999), fc.integer({ min: 1, max: 255 })), { maxLength: 8 }),
      fc.constantFrom(1, 16, 512, 4096),
      fc.nat(8191),
      (len, pokes, g, base) => {
        const buf = Buffer.alloc(len);
        for (const [at, v] of pokes) if (at < len) buf[at] = v;
        assert.deepEqual(nonZeroRuns(buf, g, base), modelRuns(buf, g, base));
        assert.equal(isZero(buf), !buf.some((x) => x !== 0));
      },
    ),
    { seed: fcSeed() },
  );
});

test('firstDifference finds the first differing byte (property)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 300_000 }), fc.array(fc.nat(299_999), { maxLength: 4 }), fc.integer({ min: 1, max: 255 }), (len, at, v) => {
      const a = Buffer.alloc(len, 7);
      const b = Buffer.from(a);
      for (const i of at) if (i < len) b[i] = (b[i]! + v) & 0xff;
      const expect = a.findIndex((x, i) => x !== b[i]);
      assert.equal(firstDifference(a, b), expect);
    }),
    { seed: fcSeed(), numRuns: 60 },
  );
  assert.equal(firstDifference(Buffer.from('abc'), Buffer.from('abcd')), -1, 'only the common length is compared');
});

test('parseSize: binary K/M/G/T/P suffixes, decimals, KiB/GB spellings; bad input is a usage error', () => {
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize('512B'), 512);
  assert.equal(parseSize('1K'), 1024);
  assert.equal(parseSize('1k'), 1024, 'case-insensitive');
  assert.equal(parseSize('64M'), 64 * 2 ** 20);
  assert.equal(parseSize('10G'), 10 * 2 ** 30);
  assert.equal(parseSize('3T'), 3 * 2 ** 40);
  assert.equal(parseSize('2P'), 2 * 2 ** 50);
  assert.equal(parseSize('1.5T'), 1.5 * 2 ** 40);
  assert.equal(parseSize('0.5K'), 512);
  assert.equal(parseSize('64KiB'), 65536);
  assert.equal(parseSize('2MiB'), 2 * 2 ** 20);
  assert.equal(parseSize('1GB'), 2 ** 30, 'GB is read as binary, like G');
  assert.equal(parseSize(' 8 M '), 8 * 2 ** 20, 'surrounding and inner blanks are allowed');
  for (const bad of ['', 'M', '10X', '10Q', '10 GiBs', '-1', '1e3', '1,5G', '0x10', '10GiB extra', '1..5K']) {
    assert.throws(() => parseSize(bad), (err: Error & { exitCode?: number }) => {
      assert.equal(err.exitCode, ExitCode.USAGE, `"${bad}"`);
      assert.match(err.message, /invalid size/);
      assert.match(err.message, /K, M, G, T or P/);
      return true;
    }, `"${bad}" is refused`);
  }
  for (const frac of ['1.5', '0.3K', '1.0000001M']) {
    assert.throws(() => parseSize(frac), /not a whole number of bytes/, `"${frac}"`);
  }
  assert.throws(() => parseSize('9P'), /not a whole number of bytes/, 'past 2^53 bytes is refused, never rounded');
  fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 20 }), fc.constantFrom('K', 'M', 'G'), (n, u) => {
    const mult = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[u];
    return parseSize(`${n}${u}`) === n * mult && parseSize(`${n}${u}iB`) === n * mult;
  }), { seed: fcSeed() });
});
