/**
 * Boot a throwaway Linux guest under QEMU (TCG, no KVM needed) whose disks are NBD exports or image
 * files, run a shell script in it, and hand back its serial console.
 *
 * How this works: scripts/vm-assets.sh builds a Debian cloud kernel and a busybox initramfs into a
 * cache dir once. The initramfs's /init loads the virtio and fw_cfg modules, waits for /dev/vda..,
 * reads the script from fw_cfg (`opt/tidemark/script`), runs it with `sh -e`, prints
 * `TIDEMARK-END rc=<status>`, syncs and powers off; `-no-reboot` makes QEMU exit then. Disks are
 * virtio-blk with `discard=unmap` and `detect-zeroes=unmap`, so the guest's TRIM reaches the NBD
 * server as NBD_CMD_TRIM and zero writes as NBD_CMD_WRITE_ZEROES; a guest `sync` sends FLUSH.
 *
 * The script runs with GUEST_LIB prepended: `result KEY VALUE` prints `TIDEMARK-RESULT KEY=VALUE`,
 * which `bootGuest` collects into `results`; `start_qga` starts the guest agent (qemu-ga, in the
 * initramfs) when QEMU has the org.qemu.guest_agent.0 port (`tidemark vm start` adds it). TIDEMARK_VM_CONSOLE=1 echoes the console to stderr live.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { requireTools } from '../helpers/tools.js';

export interface VmAssets {
  kernel: string;
  initrd: string;
}

/** A disk attached as virtio-blk: an NBD export, or an image file QEMU opens itself. */
export type GuestDisk =
  | { nbdUrl: string; detectZeroes?: DetectZeroes }
  | { file: string; format: 'raw' | 'vhdx'; detectZeroes?: DetectZeroes; readOnly?: boolean };

/** QEMU's detect-zeroes: `unmap` turns all-zero writes into WRITE_ZEROES that may deallocate. */
export type DetectZeroes = 'off' | 'on' | 'unmap';

export interface BootOptions {
  /** Attached in order as /dev/vda, /dev/vdb, ... (at most 8). */
  disks: Array<GuestDisk>;
  /** POSIX sh (busybox) run with `sh -e` as root; GUEST_LIB's functions are available. */
  script: string;
  /** Kill QEMU and reject after this long (default 120 s: TCG on a loaded 2-core CI box is slow). */
  timeoutMs?: number;
  /** Guest RAM (default 256; 64 fails silently with this kernel). */
  memoryMb?: number;
}

export interface GuestRun {
  /** Serial console (kernel messages at loglevel 3 and the script's output), `\n` line ends. */
  console: string;
  /** QEMU exited 0 and the script exited 0. */
  exitOk: boolean;
  /** The script's exit status from `TIDEMARK-END rc=N`; null if the guest never got there. */
  scriptStatus: number | null;
  /** QEMU's exit code (null when killed by a signal). */
  qemuStatus: number | null;
  /** `TIDEMARK-RESULT key=value` lines; the last value of a key wins. */
  results: Record<string, string>;
  /** Wall time from spawn to exit. */
  durationMs: number;
}

/** Raised for harness failures: missing assets, QEMU failing to start, a guest that times out. */
export class VmError extends Error {
  override name = 'VmError';
}

/** Shell functions every guest script can use. */
export const GUEST_LIB = `# --- tidemark guest lib ---
# result KEY VALUE: report a value to the host (one line; KEY has no spaces or '=').
result() { echo "TIDEMARK-RESULT $1=$2"; }
# sha FILE: hex SHA-256 of FILE.
sha() { sha256sum "$1" | cut -d' ' -f1; }
# start_qga [ARGS]: start the guest agent (qemu-ga) in the background on the virtio-serial port named
# org.qemu.guest_agent.0 (QEMU needs that port: tidemark vm start adds it); no udev, so the device
# node is found through /sys/class/virtio-ports and linked where qemu-ga looks by default.
start_qga() {
  port=""; i=0
  while [ -z "$port" ] && [ "$i" -lt 100 ]; do
    for n in /sys/class/virtio-ports/*/name; do
      [ "$(cat "$n" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/$(basename "$(dirname "$n")")
    done
    [ -n "$port" ] || usleep 50000
    i=$((i + 1))
  done
  [ -n "$port" ] || { echo "TIDEMARK-QGA no org.qemu.guest_agent.0 port"; return 1; }
  while [ ! -c "$port" ] && [ "$i" -lt 200 ]; do usleep 50000; i=$((i + 1)); done
  mkdir -p /dev/virtio-ports
  ln -sf "$port" /dev/virtio-ports/org.qemu.guest_agent.0
  qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /tmp -f /tmp/qemu-ga.pid "$@" &
}
# --- end of lib ---
`;

const RESULT_RE = /^TIDEMARK-RESULT ([^=\s]+)=(.*)$/;
const END_RE = /^TIDEMARK-END rc=(\d+)$/m;

/** Collect `TIDEMARK-RESULT key=value` lines of a console log. */
export function parseResults(consoleLog: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of consoleLog.split('\n')) {
    const m = RESULT_RE.exec(line.trimEnd());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** The script's exit status from the console, or null if the guest never finished it. */
export function parseScriptStatus(consoleLog: string): number | null {
  const m = END_RE.exec(consoleLog);
  return m ? Number(m[1]) : null;
}

/**
 * `-blockdev` JSON for an NBD URL: `nbd://host[:port][/export]` or
 * `nbd+unix:///[export]?socket=/path` (the forms of the NBD URI spec that Tidemark uses).
 * Throws VmError on anything else.
 */
export function nbdBlockdev(url: string, nodeName: string, detectZeroes: DetectZeroes = 'unmap'): Record<string, unknown> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new VmError(`bad NBD URL '${url}': use nbd://host:port/export or nbd+unix:///export?socket=/path`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  let server: Record<string, unknown>;
  if (u.protocol === 'nbd:') {
    if (!u.hostname) throw new VmError(`bad NBD URL '${url}': no host`);
    server = { type: 'inet', host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port || '10809' };
  } else if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new VmError(`bad NBD URL '${url}': nbd+unix needs ?socket=/path`);
    server = { type: 'unix', path: socket };
  } else {
    throw new VmError(`bad NBD URL '${url}': scheme must be nbd: or nbd+unix:`);
  }
  return {
    driver: 'raw',
    'node-name': nodeName,
    discard: 'unmap',
    'detect-zeroes': detectZeroes,
    file: { driver: 'nbd', server, export: exportName, discard: 'unmap' },
  };
}

/** `-blockdev` JSON for one disk. */
export function diskBlockdev(disk: GuestDisk, nodeName: string): Record<string, unknown> {
  if ('nbdUrl' in disk) return nbdBlockdev(disk.nbdUrl, nodeName, disk.detectZeroes);
  const ro = !!disk.readOnly;
  return {
    driver: disk.format,
    'node-name': nodeName,
    'read-only': ro,
    discard: 'unmap',
    'detect-zeroes': ro ? 'off' : disk.detectZeroes ?? 'unmap',
    file: { driver: 'file', filename: disk.file, 'read-only': ro, discard: 'unmap' },
  };
}

/** The full QEMU command line (pure; exported for tests). */
export function qemuArgs(assets: VmAssets, opts: BootOptions, scriptPath: string): string[] {
  if (opts.disks.length > 8) throw new VmError(`at most 8 disks (got ${opts.disks.length})`);
  const memoryMb = opts.memoryMb ?? 256;
  if (memoryMb < 128) throw new VmError(`memoryMb ${memoryMb} is too small: the guest needs at least 128`);
  if (scriptPath.includes(',')) throw new VmError(`script path '${scriptPath}' must not contain a comma`);
  const args = [
    '-nodefaults', '-no-user-config', '-no-reboot',
    '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', String(memoryMb),
    '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
    '-kernel', assets.kernel, '-initrd', assets.initrd,
    '-append', `console=ttyS0 panic=-1 loglevel=3 mitigations=off tidemark.disks=${opts.disks.length}`,
    '-fw_cfg', `name=opt/tidemark/script,file=${scriptPath}`,
  ];
  opts.disks.forEach((disk, i) => {
    args.push('-blockdev', JSON.stringify(diskBlockdev(disk, `disk${i}`)));
    args.push('-device', `virtio-blk-pci,drive=disk${i},serial=tidemark${i}`);
  });
  return args;
}

/** Find scripts/vm-assets.sh: next to the compiled file, via its source map, or above the cwd. */
export function findAssetsScript(): string {
  if (process.env.TIDEMARK_VM_ASSETS_SCRIPT) return process.env.TIDEMARK_VM_ASSETS_SCRIPT;
  const here = fileURLToPath(import.meta.url);
  const starts = [dirname(here)];
  try {
    // Compiled into an outDir outside the repo: the source map points back at test/vm/guest.ts.
    const map = JSON.parse(readFileSync(`${here}.map`, 'utf8')) as { sources?: string[] };
    for (const s of map.sources ?? []) starts.push(dirname(resolve(dirname(here), s)));
  } catch {
    // no source map: fine
  }
  starts.push(process.cwd());
  for (const start of starts) {
    for (let dir = start; ; dir = dirname(dir)) {
      const candidate = join(dir, 'scripts', 'vm-assets.sh');
      if (existsSync(candidate)) return candidate;
      if (dirname(dir) === dir) break;
    }
  }
  throw new VmError('scripts/vm-assets.sh not found above the test files or the cwd; run the tests from the repo or set TIDEMARK_VM_ASSETS_SCRIPT');
}

let assetsPromise: Promise<VmAssets> | undefined;

/** QEMU processes still running; killed if the test process exits first (a cancelled test). */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/**
 * Build (first call in a process; the script itself is idempotent and locked) or reuse the kernel
 * and initramfs. Rejects with VmError carrying the script's stderr when it fails.
 */
export function ensureVmAssets(): Promise<VmAssets> {
  assetsPromise ??= buildAssets().catch((err: unknown) => {
    assetsPromise = undefined;
    throw err;
  });
  return assetsPromise;
}

function buildAssets(): Promise<VmAssets> {
  const script = findAssetsScript();
  return new Promise((resolvePromise, reject) => {
    const child = spawn('sh', [script, '--print'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new VmError(`cannot run ${script}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const kernel = /^kernel=(.*)$/m.exec(stdout)?.[1];
      const initrd = /^initrd=(.*)$/m.exec(stdout)?.[1];
      if (code !== 0 || !kernel || !initrd) {
        reject(new VmError(`${script} failed (${signal ?? `exit ${code}`}):\n${stderr.trim()}`));
        return;
      }
      resolvePromise({ kernel, initrd });
    });
  });
}

/**
 * For tests: true when QEMU and the boot assets are available. Like requireTools: outside CI a
 * missing tool or an asset build failure skips `t` with the reason; under CI=true it throws.
 */
export async function requireVm(t: TestContext, ...moreTools: string[]): Promise<boolean> {
  if (!requireTools(t, 'qemu-system-x86_64', ...moreTools)) return false;
  try {
    await ensureVmAssets();
    return true;
  } catch (err) {
    if (process.env.CI === 'true') throw err;
    t.skip(`VM assets unavailable: ${(err as Error).message}`);
    return false;
  }
}

/** The last `lines` lines of a console log, for error messages. */
export function consoleTail(consoleLog: string, lines = 40): string {
  return consoleLog.split('\n').slice(-lines).join('\n');
}

/**
 * Boot a guest, run `opts.script`, wait for it to power off. Resolves with the console whether or
 * not the script succeeded (check `exitOk`, or call `assertGuestOk`). Rejects with VmError when
 * QEMU fails before the guest starts the script (bad disk, NBD server refusing the connection) or
 * when the guest runs past `timeoutMs` (QEMU is killed; the message carries the console tail).
 */
export async function bootGuest(opts: BootOptions): Promise<GuestRun> {
  const assets = await ensureVmAssets();
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-vm-'));
  try {
    const scriptPath = join(dir, 'script.sh');
    await writeFile(scriptPath, `${GUEST_LIB}\n${opts.script}\n`);
    const args = qemuArgs(assets, opts, scriptPath);
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const started = Date.now();
    const { out, err, code, signal, timedOut } = await new Promise<{ out: string; err: string; code: number | null; signal: string | null; timedOut: boolean }>((res, rej) => {
      const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      live.add(child);
      let o = '';
      let e = '';
      let timedOutFlag = false;
      const echo = process.env.TIDEMARK_VM_CONSOLE === '1';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        o += d;
        if (echo) process.stderr.write(d);
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (e += d));
      const timer = setTimeout(() => {
        timedOutFlag = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (error) => {
        clearTimeout(timer);
        live.delete(child);
        rej(new VmError(`cannot start qemu-system-x86_64: ${error.message} (apt-get install qemu-system-x86)`));
      });
      child.on('close', (c, s) => {
        clearTimeout(timer);
        live.delete(child);
        res({ out: o, err: e, code: c, signal: s, timedOut: timedOutFlag });
      });
    });
    const consoleLog = out.replace(/\r\n/g, '\n').replace(/\r/g, '');
    const durationMs = Date.now() - started;
    if (timedOut) {
      throw new VmError(`guest did not power off within ${timeoutMs} ms (QEMU killed). Console tail:\n${consoleTail(consoleLog)}${err ? `\nqemu stderr:\n${err.trim()}` : ''}`);
    }
    if (code !== 0 && !consoleLog.includes('TIDEMARK-BEGIN')) {
      throw new VmError(`qemu-system-x86_64 failed (${signal ?? `exit ${code}`}) before the guest ran its script:\n${err.trim()}\nConsole tail:\n${consoleTail(consoleLog)}`);
    }
    const scriptStatus = parseScriptStatus(consoleLog);
    return {
      console: consoleLog,
      exitOk: code === 0 && scriptStatus === 0,
      scriptStatus,
      qemuStatus: code,
      results: parseResults(consoleLog),
      durationMs,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Throw (with the console tail) unless the guest's script succeeded. */
export function assertGuestOk(run: GuestRun): void {
  if (!run.exitOk) {
    throw new VmError(`guest script failed (script status ${run.scriptStatus}, qemu status ${run.qemuStatus}). Console tail:\n${consoleTail(run.console)}`);
  }
}
