/**
 * NBD server benchmark: `tidemark serve` against qemu-nbd serving identical copies of one raw image, both
 * over unix sockets, both driven by the same clients in the same run:
 * - sequential read and write of the whole image with nbdcopy (one connection, its default queue depth);
 * - 4 KiB random reads and writes at queue depth 16 with a small pipelined client (below), for a fixed time.
 * Tidemark is measured with change tracking off and on. Fair and stable on a shared machine: a warm-up read
 * through every server first (same page-cache state, JIT settled); then interleaved rounds, one metric on
 * every server back to back, order alternating between rounds; `sync` before timed writes. Printed per
 * server: median and best rate, and server CPU time (all threads, from /proc) per GiB or per 1000 ops;
 * ratios are tidemark / qemu-nbd: the median of per-round ratios (each round's pair ran back to back, so it
 * resists load drift), best/best, and CPU (higher rate is better, lower CPU is better; the goal is >= 0.8
 * for sequential rates).
 *
 * Environment: TIDEMARK_BENCH_NBD_MB (image size, default 512), TIDEMARK_BENCH_REPEAT (rounds, default 5),
 * TIDEMARK_BENCH_NBD_RAND_SECONDS (per random sample, default 1; 0 skips random I/O).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import * as net from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeOptionReply, encodeInfoRequest, encodeOptionRequest } from '../src/nbd/optionCodec.js';
import { CMD_READ, CMD_WRITE, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, OPT_GO, REP_ACK } from '../src/nbd/protocol.js';
import { encodeRequestHeader } from '../src/nbd/transmissionCodec.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

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
 * Random 4 KiB I/O at a fixed queue depth for `seconds`; returns the operations completed. A minimal client:
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
  sock.destroy();
  return done;
}

type Metric = 'seqRead' | 'seqWrite' | 'randRead' | 'randWrite';
const METRICS: Array<{ key: Metric; name: string; unit: string }> = [
  { key: 'seqRead', name: 'sequential read', unit: 'MiB/s' },
  { key: 'seqWrite', name: 'sequential write', unit: 'MiB/s' },
  { key: 'randRead', name: 'random 4K read QD16', unit: 'IOPS' },
  { key: 'randWrite', name: 'random 4K write QD16', unit: 'IOPS' },
];

interface Sample {
  /** MiB/s or IOPS. */
  rate: number;
  /** Server CPU seconds (user + system, all threads) per unit of work: per GiB moved, or per 1000 operations. */
  cpu: number;
}

interface Target {
  label: string;
  socket: string;
  pid: number;
  samples: Record<Metric, Sample[]>;
}

const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on every Linux ABI we run on

/** CPU seconds (user + system, every thread) the process has used so far, from /proc/<pid>/stat. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime (14), stime (15)
}

/** Run one measurement `f` (resolving to its rate and the units of work it did) against `t`. */
async function sample(t: Target, f: () => Promise<{ rate: number; work: number }>): Promise<Sample> {
  const c0 = await cpuSeconds(t.pid);
  const { rate, work } = await f();
  return { rate, cpu: ((await cpuSeconds(t.pid)) - c0) / work };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * Interleaved rounds: each round runs one metric on every server back to back, in an order that
 * alternates between rounds (so neither server always runs right after the other's writes, or first on
 * a cold machine), and a burst of load on the shared machine hits all of them alike. A warm-up pass
 * first reads the whole image through every server: it puts each copy in the page cache the same way and
 * lets the JIT settle, so no server is measured cold.
 */
async function measureAll(targets: Target[], src: string, size: number, repeat: number, randSeconds: number): Promise<void> {
  const time = async (f: () => Promise<unknown>): Promise<number> => {
    const t0 = process.hrtime.bigint();
    await f();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  const url = (t: Target): string => `nbd+unix:///disk?socket=${t.socket}`;
  for (const t of targets) await sh('nbdcopy', ['--connections=1', url(t), 'null:']);
  for (let i = 0; i < repeat; i++) {
    const order = i % 2 === 0 ? targets : [...targets].reverse();
    const seq = async (f: () => Promise<unknown>): Promise<{ rate: number; work: number }> => ({ rate: size / MiB / (await time(f)), work: size / GiB });
    const rand = async (f: () => Promise<number>): Promise<{ rate: number; work: number }> => {
      const ops = await f();
      return { rate: ops / randSeconds, work: ops / 1000 };
    };
    for (const t of order) t.samples.seqRead.push(await sample(t, () => seq(() => sh('nbdcopy', ['--connections=1', url(t), 'null:']))));
    for (const t of order) {
      // Start every timed write with no dirty pages left by the previous one: otherwise whichever server
      // runs while the kernel writes back the last server's image is penalised (seen: 0.5x..1.75x).
      await sh('sync', []);
      t.samples.seqWrite.push(await sample(t, () => seq(() => sh('nbdcopy', ['--connections=1', src, url(t)]))));
    }
    if (randSeconds <= 0) continue;
    for (const t of order) t.samples.randRead.push(await sample(t, () => rand(() => randomIo(t.socket, 'disk', size, false, randSeconds))));
    await sh('sync', []);
    for (const t of order) t.samples.randWrite.push(await sample(t, () => rand(() => randomIo(t.socket, 'disk', size, true, randSeconds))));
  }
}

/** Print one metric: per server median and best, CPU per unit of work, and ratios to qemu-nbd. */
function report(targets: Target[], m: { key: Metric; name: string; unit: string }): void {
  const [qemu, ...ours] = targets;
  const q = qemu!.samples[m.key];
  const seq = m.unit === 'MiB/s';
  const cpuPer = (s: Sample): number => s.cpu;
  const fmt = (xs: Sample[]): string =>
    `median ${median(xs.map((s) => s.rate)).toFixed(0)} best ${Math.max(...xs.map((s) => s.rate)).toFixed(0)} ${m.unit}, cpu ${median(xs.map(cpuPer)).toFixed(2)} s/${seq ? 'GiB' : '1000 ops'}`;
  console.log(`  ${m.name}`);
  console.log(`    ${'qemu-nbd'.padEnd(24)} ${fmt(q)}`);
  for (const t of ours) {
    const xs = t.samples[m.key];
    // Paired ratios: each round's tidemark figure over the qemu-nbd figure of the same round.
    const paired = xs.map((s, i) => s.rate / q[i]!.rate);
    const ratios = `ratio median ${median(paired).toFixed(2)}x (rounds ${paired.map((r) => r.toFixed(2)).join(' ')}), best/best ${(Math.max(...xs.map((s) => s.rate)) / Math.max(...q.map((s) => s.rate))).toFixed(2)}x, cpu ${(median(xs.map(cpuPer)) / median(q.map(cpuPer))).toFixed(2)}x`;
    console.log(`    ${t.label.padEnd(24)} ${fmt(xs)} | ${ratios}`);
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
  const repeat = Number(process.env.TIDEMARK_BENCH_REPEAT ?? 5);
  const randSeconds = Number(process.env.TIDEMARK_BENCH_NBD_RAND_SECONDS ?? 1);
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-bench-nbd-'));
  const children: ChildProcess[] = [];
  try {
    const qemuImg = join(dir, 'qemu.raw');
    const plainImg = join(dir, 'plain.raw');
    const trackedImg = join(dir, 'tracked.raw');
    const src = join(dir, 'source.raw');
    // One image, copied: every server starts from the same bytes on the same filesystem.
    await fillImage(qemuImg, size);
    await copyFile(qemuImg, plainImg);
    await copyFile(qemuImg, trackedImg);
    await fillImage(src, size);
    await sh(process.execPath, [MAIN, 'rct', 'enable', trackedImg]);

    const specs: Array<[string, string, string[]]> = [
      ['qemu-nbd', 'q.sock', []],
      ['tidemark (tracking off)', 'plain.sock', []],
      ['tidemark (tracking on)', 'tracked.sock', []],
    ];
    const targets: Target[] = specs.map(([label, sock]) => ({ label, socket: join(dir, sock), pid: 0, samples: { seqRead: [], seqWrite: [], randRead: [], randWrite: [] } }));
    children.push(spawn('qemu-nbd', ['-f', 'raw', '-x', 'disk', `--socket=${targets[0]!.socket}`, '--persistent', '--shared=16', qemuImg], { stdio: 'ignore' }));
    children.push(spawn(process.execPath, [MAIN, 'serve', plainImg, '--name', 'disk', '--socket', targets[1]!.socket], { stdio: 'ignore' }));
    children.push(spawn(process.execPath, [MAIN, 'serve', trackedImg, '--name', 'disk', '--socket', targets[2]!.socket], { stdio: 'ignore' }));
    for (let i = 0; i < targets.length; i++) {
      await waitForSocket(targets[i]!.socket, children[i]!);
      targets[i]!.pid = children[i]!.pid!;
    }
    const load0 = loadavg()[0]!;
    await measureAll(targets, src, size, repeat, randSeconds);
    for (const c of children) await stop(c);

    console.log(
      `nbd: tidemark serve vs qemu-nbd, ${size / MiB} MiB raw image (identical copies), unix socket, nbdcopy one connection; ` +
        `${repeat} interleaved rounds, alternating order; load average ${load0.toFixed(1)} -> ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs`,
    );
    console.log('  ratio = tidemark / qemu-nbd (higher is better; goal >= 0.8 sequential); cpu = server CPU time (all threads) for the same work, lower is better');
    for (const m of METRICS) if (targets[0]!.samples[m.key].length > 0) report(targets, m);
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
