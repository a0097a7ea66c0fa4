import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '../helpers/tools.js';
import { ensureVmAssets, GUEST_LIB, requireVm } from '../vm/guest.js';
import { cli, hashDisk, ok, writeDisk } from './harness.js';
import { openDisk } from '../../src/disk/openDisk.js';
import { showMachine } from '../../src/vm/machines.js';
import { exportMachine } from '../../src/export/exportMachine.js';

const MiB = 2 ** 20;

async function waitOff(home: string, ref: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while ((await showMachine(home, ref)).status.state !== 'off') {
    if (Date.now() > deadline) throw new Error(`machine ${ref} still running after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('vm start runs QEMU on the NBD-served, tracked disks; guest writes land in the next differential; vm stop', async (t) => {
  if (!(await requireVm(t))) return;
  const { kernel, initrd } = await ensureVmAssets();
  const home = await tempDir(t);
  const out = await tempDir(t, 'tidemark-exp-');
  const m = ok(home, ['vm', 'create', 'g', '--disk', '16M', '--memory', '256', '--no-network']);
  const d0 = m.disks[0].path as string;
  await writeDisk(d0, [[0, randomBytes(MiB)]]);
  const e1 = await exportMachine(home, 'g', join(out, 'e1'));

  const script = join(home, 'script.sh');
  await writeFile(script, GUEST_LIB + [
    'dd if=/dev/urandom of=/dev/vda bs=65536 count=4 seek=10 2>/dev/null',
    'sync',
    'result sha "$(dd if=/dev/vda bs=65536 count=4 skip=10 2>/dev/null | sha256sum | cut -d" " -f1)"',
    'sleep "$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/tidemark/sleep/raw 2>/dev/null || echo 0)"',
  ].join('\n'));
  const boot = (sleep: string) => {
    const sleepFile = join(home, `sleep-${sleep}`);
    return {
      args: ['--kernel', kernel, '--initrd', initrd, '--append', 'console=ttyS0 panic=-1 loglevel=3 mitigations=off tidemark.disks=1',
        '--qemu-arg=-fw_cfg', `--qemu-arg=name=opt/tidemark/script,file=${script}`, '--qemu-arg=-fw_cfg', `--qemu-arg=name=opt/tidemark/sleep,file=${sleepFile}`],
      file: sleepFile,
    };
  };
  const b1 = boot('0');
  await writeFile(b1.file, '0');
  const started = ok(home, ['vm', 'start', 'g', ...b1.args]);
  assert.ok(['running', 'off'].includes(started.status.state));
  if (started.status.state === 'running') {
    // While it runs the machine cannot be changed (it can be checkpointed and exported online: test/vm-mgmt/online*.test.ts).
    const busy = cli(home, ['vm', 'set', 'g', '--cpus', '2']);
    assert.equal(busy.status, 5, busy.stderr);
    assert.match(busy.stderr, /running: stop it first/);
  }
  await waitOff(home, 'g', 90_000);
  const consoleLog = await (await import('node:fs/promises')).readFile(join(m.dir, 'console.log'), 'utf8');
  const guestSha = /TIDEMARK-RESULT sha=([0-9a-f]{64})/.exec(consoleLog)?.[1];
  assert.ok(guestSha, `no result on the console:\n${consoleLog.slice(-2000)}`);
  const dev = await openDisk(d0, { readOnly: true });
  const region = await dev.read(10 * 65536, 4 * 65536);
  await dev.close();
  assert.equal(createHash('sha256').update(region).digest('hex'), guestSha, 'the guest wrote through the NBD server into the VHDX');

  const e2 = await exportMachine(home, 'g', join(out, 'e2'), { since: e1.manifest.refpoint.id });
  assert.equal(e2.manifest.disks[0]!.mode, 'differential');
  assert.ok(e2.manifest.disks[0]!.copied >= 4 * 65536 && e2.manifest.disks[0]!.copied < 2 * MiB, `copied ${e2.manifest.disks[0]!.copied}`);
  assert.equal(e2.manifest.disks[0]!.sha256, await hashDisk(d0));

  // A guest that keeps running is stopped by `vm stop`; its disk is released.
  const b2 = boot('600');
  await writeFile(b2.file, '600');
  assert.equal(ok(home, ['vm', 'start', 'g', ...b2.args]).status.state, 'running');
  const stopped = ok(home, ['vm', 'stop', 'g']);
  assert.equal(stopped.status.state, 'off');
  await writeDisk(d0, [[0, Buffer.alloc(512, 1)]]); // the disk lock was released
});
