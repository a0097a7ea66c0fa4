import type { Command } from 'commander';
import { mountSnapshot } from '../../backup/mountSnapshot.js';
import { UsageError } from '../../errors.js';
import type { ListenTarget } from '../../nbd/NbdServer.js';
import { nbdUri } from '../../nbd/serveDisks.js';
import { openRepo, repoOptions, type RepoOpts } from './backup.js';
import { parseListen } from './serve.js';

/** `tidemark mount <snapshot>`: serve a restore point over NBD until SIGTERM/SIGINT. */
export function register(program: Command): void {
  repoOptions(
    program
      .command('mount <snapshot>')
      .description('serve a disk of a snapshot over NBD (read-only; --writable: writes go to a temporary copy-on-write overlay, for instant recovery)')
      .option('--listen <host:port>', 'TCP address (default 127.0.0.1:10809)')
      .option('--socket <path>', 'listen on a unix socket instead of TCP')
      .option('--writable', 'accept writes into a temporary overlay (deleted when the mount stops; the repository is never changed)')
      .option('--disk <name>', 'which disk of the snapshot (when it has several)')
      .option('--name <name>', 'export name (default: the disk name)')
      .option('--json', 'print a JSON line when ready'),
  ).action(async (snapshot: string, o: RepoOpts & { listen?: string; socket?: string; writable?: boolean; disk?: string; name?: string }) => {
    if (o.listen && o.socket) throw new UsageError('give either --listen or --socket, not both');
    const listen: ListenTarget = o.socket ? { path: o.socket } : parseListen(o.listen ?? '127.0.0.1:10809');
    const repo = await openRepo(o);
    try {
      const m = await mountSnapshot(repo, snapshot, { listen, disk: o.disk, writable: o.writable, name: o.name, log: (l) => process.stderr.write(`tidemark: ${l}\n`) });
      const uri = nbdUri(m.address, m.exportName);
      process.stderr.write(`tidemark: serving snapshot ${m.snapshot.slice(0, 12)} disk ${m.disk} at ${uri}${m.writable ? ` (writable; overlay ${m.overlay})` : ' (read-only)'}\n`);
      if (o.json) process.stdout.write(JSON.stringify({ snapshot: m.snapshot, disk: m.disk, export: m.exportName, uri, writable: m.writable, overlay: m.overlay ?? null, listening: typeof m.address === 'string' ? { socket: m.address } : { host: m.address.address, port: m.address.port } }) + '\n');
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.removeListener('SIGTERM', stop);
          process.removeListener('SIGINT', stop);
          resolve();
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      await m.close();
      process.stderr.write('tidemark: stopped\n');
    } finally {
      await repo.close();
    }
  });
}
