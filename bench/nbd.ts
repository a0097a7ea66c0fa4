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

/** Best (smallest) wall time in seconds of `repeat` runs. */
async function best(repeat: number, f: () => Promise<void>): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    await f();
    min = Math.min(min, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return min;
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

async function measure(url: string, socketPath: string, name: string, src: string, size: number, repeat: number): Promise<Figures> {
  const seqRead = await best(repeat, () => sh('nbdcopy', ['--connections=1', url, 'null:']).then(() => undefined));
  const seqWrite = await best(repeat, () => sh('nbdcopy', ['--connections=1', src, url]).then(() => undefined));
  let randRead = 0;
  let randWrite = 0;
  for (let i = 0; i < repeat; i++) {
    randRead = Math.max(randRead, await randomIo(socketPath, name, size, false, 1.5));
    randWrite = Math.max(randWrite, await randomIo(socketPath, name, size, true, 1.5));
  }
  return { seqRead: size / MiB / seqRead, seqWrite: size / MiB / seqWrite, randRead, randWrite };
}

export async function run(): Promise<void> {
  for (const tool of ['qemu-nbd', 'nbdcopy', 'qemu-img']) {
    if (!(await hasTool(tool))) {
      console.log(`nbd bench: skipped (${tool} not installed)`);
      return;
    }
  }
  const size = Number(process.env.TIDEMARK_BENCH_NBD_MB ?? 512) * MiB;
  const repeat = Number(process.env.TIDEMARK_BENCH_REPEAT ?? 3);
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-nbd-'));
  const children: ChildProcess[] = [];
  try {
    const ours = join(dir, 'tidemark.raw');
    const theirs = join(dir, 'qemu.raw');
    const src = join(dir, 'source.raw');
    await fillImage(ours, size);
    await copyFile(ours, theirs);
    await fillImage(src, size);

    const qsock = join(dir, 'q.sock');
    const q = spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', `--socket=${qsock}`, '--persistent', '--shared=16', theirs], { stdio: 'ignore' });
    children.push(q);
    await waitForSocket(qsock, q);
    const qemu = await measure(`nbd+unix:///disk?socket=${qsock}`, qsock, 'disk', src, size, repeat);

    const results: Array<{ label: string; f: Figures }> = [];
    for (const tracking of [false, true]) {
      if (tracking) await sh(process.execPath, [MAIN, 'rct', 'enable', ours]);
      const tsock = join(dir, `t-${tracking}.sock`);
      const t = spawn(process.execPath, [MAIN, 'serve', ours, '--name', 'disk', '--socket', tsock], { stdio: 'ignore' });
      children.push(t);
      await waitForSocket(tsock, t);
      results.push({ label: `tidemark (tracking ${tracking ? 'on' : 'off'})`, f: await measure(`nbd+unix:///disk?socket=${tsock}`, tsock, 'disk', src, size, repeat) });
      await stop(t);
    }
    await stop(q);

    const row = (name: string, unit: string, pick: (f: Figures) => number): void => {
      const cells = results.map((r) => `${pick(r.f).toFixed(0)} ${unit} (${(pick(r.f) / pick(qemu)).toFixed(2)}x)`);
      console.log(`  ${name.padEnd(22)} qemu-nbd ${pick(qemu).toFixed(0)} ${unit} | ${results.map((r, i) => `${r.label}: ${cells[i]}`).join(' | ')}`);
    };
    console.log(`nbd: tidemark serve vs qemu-nbd, ${size / MiB} MiB raw image, unix socket, best of ${repeat}`);
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
