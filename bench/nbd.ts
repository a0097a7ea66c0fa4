/**
 * NBD server benchmark: `tidemark serve` against qemu-nbd serving a copy of the same raw image, both over
 * unix sockets, both driven by the same clients in the same run:
 * - sequential read and write of the whole image with nbdcopy (one connection, its default queue depth);
 * - 4 KiB random reads and writes at queue depth 16 with a small pipelined client (below), for a fixed time.
 * Tidemark is measured with change tracking off and on. Figures are best-of-N to damp noise on a shared
 * machine; ratios are tidemark / qemu-nbd (higher is better; the goal is >= 0.8 for sequential).
 *
 * Environment: TIDEMARK_BENCH_NBD_MB (image size, default 512), TIDEMARK_BENCH_REPEAT (default 3).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, open, rm } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeOptionReply, encodeInfoRequest, encodeOptionRequest } from '../src/nbd/optionCodec.js';
import { CMD_READ, CMD_WRITE, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, OPT_GO, REP_ACK } from '../src/nbd/protocol.js';
import { encodeRequestHeader } from '../src/nbd/transmissionCodec.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 16 * MiB }, (err, out, errOut) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${errOut || err.message}`)) : resolve(out))),
  );
}

async function hasTool(name: string): Promise<boolean> {
  return sh('sh', ['-c', `command -v ${name}`]).then(
    () => true,
    () => false,
  );
}

async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}) before listening on ${path}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(path);
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on ${path}`);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await done;
}

async function fillImage(path: string, size: number): Promise<void> {
  const block = randomBytes(8 * MiB);
  const fh = await open(path, 'w');
  try {
    for (let off = 0; off < size; off += block.length) {
      block.writeUInt32LE(off / block.length, 0); // no two blocks alike
      await fh.write(block, 0, Math.min(block.length, size - off), off);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Random 4 KiB I/O at a fixed queue depth for `seconds`; returns operations per second. A minimal client:
 * simple replies only (no structured-reply negotiation), so every READ reply is header + 4096 bytes.
 */
async function randomIo(socketPath: string, exportName: string, size: number, write: boolean, seconds: number, depth = 16): Promise<number> {
  const sock = net.connect(socketPath);
  sock.setNoDelay(true);
  await new Promise<void>((r, j) => (sock.once('connect', r), sock.once('error', j)));
  let buf: Buffer = Buffer.alloc(0);
  let onData: (() => void) | null = null;
  sock.on('data', (c: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, c]) : c;
    onData?.();
  });
  const need = async (n: number): Promise<void> => {
    while (buf.length < n) await new Promise<void>((r) => (onData = r));
  };
  await need(18);
  buf = buf.subarray(18);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 0);
  sock.write(flags);
  sock.write(encodeOptionRequest(OPT_GO, encodeInfoRequest(exportName)));
  for (;;) {
    let d = decodeOptionReply(buf);
    while (!d) {
      await need(buf.length + 1);
      d = decodeOptionReply(buf);
    }
    buf = buf.subarray(d.size);
    if (d.reply.type === REP_ACK) break;
    if (d.reply.type >= 0x80000000) throw new Error(`GO refused: ${d.reply.data.toString()}`);
  }
  const blocks = Math.floor(size / 4096);
  const payload = randomBytes(4096);
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  let issued = 0;
  let handle = 1n;
  const issue = (): void => {
    const off = Math.floor(Math.random() * blocks) * 4096;
    if (write) {
      sock.write(encodeRequestHeader(CMD_WRITE, 0, handle++, off, 4096));
      sock.write(payload);
    } else sock.write(encodeRequestHeader(CMD_READ, 0, handle++, off, 4096));
    issued++;
  };
  await new Promise<void>((resolve, reject) => {
    const replySize = write ? 16 : 16 + 4096;
    onData = () => {
      while (buf.length >= replySize) {
        if (buf.readUInt32BE(4) !== 0) return reject(new Error(`I/O error ${buf.readUInt32BE(4)}`));
        buf = buf.subarray(replySize);
        done++;
        if (Date.now() < deadline) issue();
        else if (done === issued) return resolve();
      }
    };
    for (let i = 0; i < depth; i++) issue();
  });
  const elapsed = seconds;
  sock.destroy();
  return done / elapsed;
}

interface Figures {
  seqRead: number; // MiB/s
  seqWrite: number;
  randRead: number; // IOPS
  randWrite: number;
}

interface Target {
  label: string;
  socket: string;
  f: Figures;
}

/**
 * Round-robin: each repetition runs every metric on every server back to back, so a burst of load on the
 * shared machine hits all of them alike; each figure is the best seen.
 */
async function measureAll(targets: Target[], src: string, size: number, repeat: number): Promise<void> {
  const time = async (f: () => Promise<unknown>): Promise<number> => {
    const t0 = process.hrtime.bigint();
    await f();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  for (let i = 0; i < repeat; i++) {
    for (const t of targets) {
      const url = `nbd+unix:///disk?socket=${t.socket}`;
      t.f.seqRead = Math.max(t.f.seqRead, size / MiB / (await time(() => sh('nbdcopy', ['--connections=1', url, 'null:']))));
    }
    for (const t of targets) {
      const url = `nbd+unix:///disk?socket=${t.socket}`;
      // Start every timed write with no dirty pages left by the previous one: otherwise whichever server
      // runs while the kernel writes back the last server's 512 MiB is penalised (seen: 0.5x..1.75x).
      await sh('sync', []);
      t.f.seqWrite = Math.max(t.f.seqWrite, size / MiB / (await time(() => sh('nbdcopy', ['--connections=1', src, url]))));
    }
    for (const t of targets) t.f.randRead = Math.max(t.f.randRead, await randomIo(t.socket, 'disk', size, false, 1.5));
    for (const t of targets) t.f.randWrite = Math.max(t.f.randWrite, await randomIo(t.socket, 'disk', size, true, 1.5));
  }
}

export async function run(): Promise<void> {
  const missing: string[] = [];
  for (const tool of ['qemu-nbd', 'nbdcopy', 'qemu-img']) if (!(await hasTool(tool))) missing.push(tool);
  if (missing.length > 0) {
    // A benchmark without its peer measures nothing: fail loudly so the bench runner reports it.
    throw new Error(`nbd bench: required tool(s) not installed: ${missing.join(', ')} (install qemu-utils and libnbd-bin to run it)`);
  }
  const size = Number(process.env.TIDEMARK_BENCH_NBD_MB ?? 512) * MiB;
  const repeat = Number(process.env.TIDEMARK_BENCH_REPEAT ?? 3);
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-nbd-'));
  const children: ChildProcess[] = [];
  try {
    const qemuImg = join(dir, 'qemu.raw');
    const plainImg = join(dir, 'plain.raw');
    const trackedImg = join(dir, 'tracked.raw');
    const src = join(dir, 'source.raw');
    await fillImage(qemuImg, size);
    await copyFile(qemuImg, plainImg);
    await copyFile(qemuImg, trackedImg);
    await fillImage(src, size);
    await sh(process.execPath, [MAIN, 'rct', 'enable', trackedImg]);

    const zero = (): Figures => ({ seqRead: 0, seqWrite: 0, randRead: 0, randWrite: 0 });
    const targets: Target[] = [
      { label: 'qemu-nbd', socket: join(dir, 'q.sock'), f: zero() },
      { label: 'tidemark (tracking off)', socket: join(dir, 'plain.sock'), f: zero() },
      { label: 'tidemark (tracking on)', socket: join(dir, 'tracked.sock'), f: zero() },
    ];
    children.push(spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', `--socket=${targets[0]!.socket}`, '--persistent', '--shared=16', qemuImg], { stdio: 'ignore' }));
    children.push(spawn(process.execPath, [MAIN, 'serve', plainImg, '--name', 'disk', '--socket', targets[1]!.socket], { stdio: 'ignore' }));
    children.push(spawn(process.execPath, [MAIN, 'serve', trackedImg, '--name', 'disk', '--socket', targets[2]!.socket], { stdio: 'ignore' }));
    for (let i = 0; i < targets.length; i++) await waitForSocket(targets[i]!.socket, children[i]!);
    await measureAll(targets, src, size, repeat);
    for (const c of children) await stop(c);

    const qemu = targets[0]!.f;
    const row = (name: string, unit: string, pick: (f: Figures) => number): void => {
      const cells = targets.slice(1).map((t) => `${t.label}: ${pick(t.f).toFixed(0)} ${unit} (${(pick(t.f) / pick(qemu)).toFixed(2)}x)`);
      console.log(`  ${name.padEnd(22)} qemu-nbd ${pick(qemu).toFixed(0)} ${unit} | ${cells.join(' | ')}`);
    };
    console.log(`nbd: tidemark serve vs qemu-nbd, ${size / MiB} MiB raw image, unix socket, nbdcopy one connection; best of ${repeat} (ratio = tidemark / qemu-nbd)`);
    row('sequential read', 'MiB/s', (f) => f.seqRead);
    row('sequential write', 'MiB/s', (f) => f.seqWrite);
    row('random 4K read QD16', 'IOPS', (f) => f.randRead);
    row('random 4K write QD16', 'IOPS', (f) => f.randWrite);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  run().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
