/**
 * Child process of the crash test: opens a raw disk with tracking and writes, zeroes, trims, flushes,
 * seals and drops at random, 4 requests at a time, until it is SIGKILLed. Waits for "go" on stdin,
 * prints "ready" once the tracking epoch has begun. argv: <disk> <hotRegionSize>
 */
import { randomBytes, randomInt } from 'node:crypto';
import { RawFileDevice } from '../../src/blockdev/RawFileDevice.js';
import { fileFingerprint } from '../../src/rct/fileFingerprint.js';
import { openTracked } from '../../src/rct/trackingLayer.js';

const [disk, hot] = process.argv.slice(2) as [string, string];
// Started ahead of time (module loading overlaps the parent's work); open the disk on "go".
await new Promise<void>((res) => process.stdin.on('data', (d: Buffer) => d.toString().includes('go') && res()));
const fingerprintBeforeOpen = await fileFingerprint(disk);
const raw = await RawFileDevice.open(disk);
const dev = await openTracked(raw, disk, { persistIntervalMs: 20, fingerprintBeforeOpen });
const size = dev.size;
const hotSize = Number(hot);
// A few hot areas per run, so the .mrt marks some regions and not others.
const hotAreas = Array.from({ length: 1 + randomInt(3) }, () => randomInt(Math.max(1, size - hotSize)));
process.stdout.write('ready\n');

async function worker(): Promise<void> {
  for (;;) {
    const base = hotAreas[randomInt(hotAreas.length)]!;
    const offset = Math.min(size - 1, base + randomInt(hotSize));
    const length = Math.min(size - offset, 1 + randomInt(256 * 1024));
    const r = randomInt(100);
    if (r < 70) await dev.write(offset, randomBytes(length));
    else if (r < 80) await dev.zero(offset, length);
    else if (r < 88) await dev.trim(offset, length);
    else if (r < 94) await dev.flush();
    else if (r < 98) await dev.seal();
    else {
      const ids = await dev.listIds();
      // keep the parent's two IDs (the oldest); drop one of ours
      if (ids.length > 2) await dev.drop(ids[2 + randomInt(ids.length - 2)]!);
    }
  }
}
await Promise.all([worker(), worker(), worker(), worker()]);
