/**
 * The guest agent client over a real unix socket against a scripted peer (for what a real qemu-ga
 * will not do on demand: stale answers, silence, an old agent, a dropped connection). The real agent
 * is exercised in quiesce.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { tempDir } from '../helpers/tools.js';
import { GuestAgent, guestAgentSocket } from '../../src/vm/GuestAgent.js';
import { GuestAgentAbsentError, GuestAgentCommandError, GuestAgentNotRespondingError } from '../../src/vm/guestAgentErrors.js';
import { QgaDecoder } from '../../src/vm/QgaDecoder.js';
import { qemuCommandLine } from '../../src/vm/runMachine.js';
import type { MachineView } from '../../src/vm/machines.js';
import { CONFIG_SCHEMA } from '../../src/vm/MachineConfig.js';

type Cmd = { execute: string; arguments?: Record<string, unknown> };
type Handler = (cmd: Cmd, sock: Socket, sawSentinel: boolean) => void;

/** A peer speaking the agent's wire format; `handle` decides what (if anything) to answer. */
async function peer(path: string, handle: Handler): Promise<{ server: Server; received: Cmd[] }> {
  const received: Cmd[] = [];
  const server = createServer((sock) => {
    const d = new QgaDecoder();
    let sentinel = false;
    sock.on('data', (b: Buffer) => {
      for (const ev of d.push(b)) {
        if (ev.type === 'delimiter') sentinel = true;
        if (ev.type === 'message') {
          received.push(ev.value as Cmd);
          handle(ev.value as Cmd, sock, sentinel);
        }
      }
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { server, received };
}

const reply = (sock: Socket, v: unknown) => sock.write(`${JSON.stringify(v)}\n`);

test('guestAgentSocket is <machine dir>/qga.sock; qemuCommandLine wires it to the org.qemu.guest_agent.0 port', () => {
  assert.equal(guestAgentSocket('/var/lib/t/machines/abc'), '/var/lib/t/machines/abc/qga.sock');
  const view = (dir: string): MachineView => ({
    id: '00000000-0000-4000-8000-000000000000', name: 'g', dir, status: { state: 'off' },
    config: { schema: CONFIG_SCHEMA, cpus: 1, memoryMiB: 256, disks: [{ slot: 0, path: '/d.vhdx' }], network: [], notes: '' },
    disks: [], checkpoints: [], refpoints: [],
  });
  const args = qemuCommandLine(view('/h/machines/m1'), '/h/machines/m1/nbd.sock', '/h/c.log', {});
  const chardev = args[args.indexOf('-chardev') + 1];
  assert.equal(chardev, 'socket,id=qga0,path=/h/machines/m1/qga.sock,server=on,wait=off');
  assert.ok(args.includes('virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0'));
  assert.ok(args.includes('virtio-serial-pci,id=vserial0'));
  // QEMU's option syntax doubles a comma inside a value.
  const odd = qemuCommandLine(view('/h/a,b'), '/s', '/c', {});
  assert.equal(odd[odd.indexOf('-chardev') + 1], 'socket,id=qga0,path=/h/a,,b/qga.sock,server=on,wait=off');
});

test('connect: sends 0xFF first, skips stale answers until its own sync id, then runs commands in order', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'qga.sock');
  let frozen = false;
  const { server, received } = await peer(path, (cmd, sock, sawSentinel) => {
    if (cmd.execute === 'guest-sync-delimited') {
      assert.ok(sawSentinel, 'the client sends 0xFF before guest-sync-delimited');
      // Stale answers of a previous client, then the sentinel and the real answer.
      reply(sock, { return: 12345 });
      sock.write('{"return": "half');
      sock.write(Buffer.from([0xff]));
      reply(sock, { return: cmd.arguments!.id });
    } else if (cmd.execute === 'guest-fsfreeze-status') reply(sock, { return: frozen ? 'frozen' : 'thawed' });
    else if (cmd.execute === 'guest-fsfreeze-freeze') {
      frozen = true;
      reply(sock, { return: 2 });
    } else if (cmd.execute === 'guest-fsfreeze-thaw') {
      frozen = false;
      reply(sock, { return: 2 });
    } else reply(sock, { error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` } });
  });
  t.after(() => server.close());
  const a = await GuestAgent.connect(path);
  assert.equal(await a.fsfreezeStatus(), 'thawed');
  assert.equal(await a.fsfreezeFreeze(), 2);
  assert.equal(await a.fsfreezeStatus(), 'frozen');
  assert.equal(await a.fsfreezeThaw(), 2);
  await assert.rejects(a.execute('guest-nonsense'), (err: unknown) => err instanceof GuestAgentCommandError && /CommandNotFound/.test(err.message));
  await a.close();
  assert.deepEqual(received.map((c) => c.execute), ['guest-sync-delimited', 'guest-fsfreeze-status', 'guest-fsfreeze-freeze', 'guest-fsfreeze-status', 'guest-fsfreeze-thaw', 'guest-nonsense']);
  const id = received[0]!.arguments!.id as number;
  assert.ok(Number.isSafeInteger(id) && id > 0);
});

test('connect: an agent without guest-sync-delimited is synchronised with guest-sync', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'qga.sock');
  const { server, received } = await peer(path, (cmd, sock) => {
    if (cmd.execute === 'guest-sync') reply(sock, { return: cmd.arguments!.id });
    else if (cmd.execute === 'guest-ping') reply(sock, { return: {} });
    else reply(sock, { error: { class: 'CommandNotFound', desc: 'no' } });
  });
  t.after(() => server.close());
  const a = await GuestAgent.connect(path);
  await a.ping();
  await a.close();
  assert.deepEqual(received.map((c) => c.execute), ['guest-sync-delimited', 'guest-sync', 'guest-ping']);
  assert.equal(received[1]!.arguments!.id, received[0]!.arguments!.id);
});

test('absent socket, a non-socket file, silence, a late answer, a dropped connection: typed errors; a timeout forces a re-sync', async (t) => {
  const dir = await tempDir(t);
  await assert.rejects(GuestAgent.connect(join(dir, 'none.sock')), GuestAgentAbsentError);
  await writeFile(join(dir, 'file'), 'x');
  await assert.rejects(GuestAgent.connect(join(dir, 'file')), (err: unknown) => err instanceof GuestAgentAbsentError || err instanceof GuestAgentNotRespondingError);

  // QEMU listening with no agent in the guest: nothing ever answers.
  const silent = join(dir, 'silent.sock');
  const s1 = await peer(silent, () => undefined);
  t.after(() => s1.server.close());
  const t0 = Date.now();
  await assert.rejects(GuestAgent.connect(silent, { timeoutMs: 300 }), (err: unknown) => {
    assert.ok(err instanceof GuestAgentNotRespondingError);
    assert.match(err.message, /qemu-guest-agent/);
    assert.match(err.message, /--fallback crash/);
    return true;
  });
  assert.ok(Date.now() - t0 < 3000);

  // Freeze answers late: the call times out, its late answer must not be taken for the next command's.
  // (Like qemu-ga, the peer answers in order: the late answer comes before the re-sync's.)
  const slow = join(dir, 'slow.sock');
  let chain = Promise.resolve();
  const later = (ms: number, fn: () => void) => (chain = chain.then(() => new Promise<void>((r) => setTimeout(() => r(fn()), ms))));
  const s2 = await peer(slow, (cmd, sock) => {
    if (cmd.execute === 'guest-sync-delimited') {
      later(0, () => {
        sock.write(Buffer.from([0xff]));
        reply(sock, { return: cmd.arguments!.id });
      });
    } else if (cmd.execute === 'guest-fsfreeze-freeze') later(300, () => reply(sock, { return: 99 }));
    else if (cmd.execute === 'guest-fsfreeze-thaw') later(100, () => reply(sock, { return: 1 }));
  });
  t.after(() => s2.server.close());
  const a = await GuestAgent.connect(slow);
  await assert.rejects(a.fsfreezeFreeze(100), GuestAgentNotRespondingError);
  assert.equal(await a.fsfreezeThaw(2000), 1, 'the late 99 was discarded by the re-sync');
  assert.deepEqual(s2.received.map((c) => c.execute), ['guest-sync-delimited', 'guest-fsfreeze-freeze', 'guest-sync-delimited', 'guest-fsfreeze-thaw']);
  await a.close();

  // The connection drops mid-command (QEMU quit): NotResponding at once, not after the timeout.
  const drop = join(dir, 'drop.sock');
  const s3 = await peer(drop, (cmd, sock) => {
    if (cmd.execute === 'guest-sync-delimited') reply(sock, { return: cmd.arguments!.id });
    else sock.destroy();
  });
  t.after(() => s3.server.close());
  const b = await GuestAgent.connect(drop);
  const t1 = Date.now();
  await assert.rejects(b.fsfreezeStatus(30_000), GuestAgentNotRespondingError);
  assert.ok(Date.now() - t1 < 5000);
  await assert.rejects(b.ping(), GuestAgentNotRespondingError);
  await b.close();
});
