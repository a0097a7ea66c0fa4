import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { UsageError } from '../../errors.js';
import type { ListenTarget, NbdTlsOptions } from '../../nbd/NbdServer.js';
import { serveDisks } from '../../nbd/serveDisks.js';

interface ServeOpts {
  listen?: string;
  socket?: string;
  readOnly?: boolean;
  name?: string;
  tlsCert?: string;
  tlsKey?: string;
  tls?: string | boolean;
  json?: boolean;
}

/** "HOST:PORT", "[v6]:PORT", ":PORT" or "PORT". */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]*):(\d+)$/.exec(text) ?? /^()(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`invalid --listen "${text}": use HOST:PORT, e.g. 127.0.0.1:10809`);
  return { host: m[1] || '127.0.0.1', port };
}

async function tlsOptions(o: ServeOpts): Promise<NbdTlsOptions | undefined> {
  const wanted = o.tls !== undefined && o.tls !== false;
  let mode: NbdTlsOptions['mode'] = 'allowed';
  if (typeof o.tls === 'string') {
    if (o.tls === 'require' || o.tls === 'required') mode = 'required';
    else if (o.tls !== 'allow' && o.tls !== 'allowed') throw new UsageError(`invalid --tls=${o.tls}: use --tls (clients may use TLS) or --tls=require`);
  }
  if (!o.tlsCert && !o.tlsKey) {
    if (wanted) throw new UsageError('--tls needs --tls-cert and --tls-key (PEM files)');
    return undefined;
  }
  if (!o.tlsCert || !o.tlsKey) throw new UsageError('give both --tls-cert and --tls-key');
  const [cert, key] = await Promise.all([readFile(o.tlsCert), readFile(o.tlsKey)]);
  return { cert, key, mode };
}

/** `tidemark serve <disk>...`: serve disks over NBD until SIGTERM/SIGINT. */
export function register(program: Command): void {
  program
    .command('serve <disk...>')
    .description('serve disks over NBD (QEMU, qemu-img, nbdcopy, ...); each disk is an export named after its file')
    .option('--listen <host:port>', 'TCP address (default 127.0.0.1:10809)')
    .option('--socket <path>', 'listen on a unix socket instead of TCP')
    .option('--read-only', 'refuse writes')
    .option('--name <name>', 'export name (only with one disk; default: the file name)')
    .option('--tls-cert <file>', 'TLS certificate (PEM)')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--tls [mode]', 'offer TLS via STARTTLS; --tls=require refuses clients that do not use it')
    .option('--json', 'print a JSON line when ready')
    .action(async (disks: string[], o: ServeOpts) => {
      if (o.name !== undefined && disks.length !== 1) throw new UsageError('--name works with one disk only; several disks are exported under their file names');
      if (o.listen && o.socket) throw new UsageError('give either --listen or --socket, not both');
      const listen: ListenTarget = o.socket ? { path: o.socket } : parseListen(o.listen ?? '127.0.0.1:10809');
      const tls = await tlsOptions(o);
      const served = await serveDisks({
        disks,
        names: o.name !== undefined ? [o.name] : undefined,
        readOnly: o.readOnly,
        listen,
        tls,
        log: (l) => process.stderr.write(`tidemark: ${l}\n`),
      });
      // Installed before the readiness lines: a client that signals as soon as it reads them must find
      // the handlers in place (else the default action kills the process and skips the drain).
      const stopped = new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          process.removeListener('SIGTERM', onTerm);
          process.removeListener('SIGINT', onInt);
          process.stderr.write(`tidemark: ${sig}: finishing in-flight requests and closing\n`);
          resolve();
        };
        const onTerm = (): void => stop('SIGTERM');
        const onInt = (): void => stop('SIGINT');
        process.once('SIGTERM', onTerm);
        process.once('SIGINT', onInt);
      });
      const where = typeof served.address === 'string' ? served.address : `${served.address.address}:${served.address.port}`;
      process.stderr.write(`tidemark: listening on ${where}${tls ? ` (TLS ${tls.mode})` : ''}\n`);
      for (const d of served.disks) process.stderr.write(`tidemark:   ${d.uri}  ${d.path}${d.readOnly ? ' (read-only)' : ''}${d.tracked ? ' (tracked)' : ''}\n`);
      if (o.json) process.stdout.write(JSON.stringify({ listening: typeof served.address === 'string' ? { socket: served.address } : { host: served.address.address, port: served.address.port }, tls: tls?.mode ?? 'off', exports: served.disks }) + '\n');
      await stopped;
      await served.close();
      process.stderr.write('tidemark: stopped\n');
    });
}
