import { writev as fsWritev } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** `list` without its first `n` bytes: whole buffers dropped, then the written head of a partly written one. */
function dropWritten(list: readonly Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < list.length && n >= list[i].length) n -= list[i++].length;
  const rest = list.slice(i);
  if (n > 0) rest[0] = rest[0].subarray(n);
  return rest;
}

const noProgress = (at: number, what: string): Error => Object.assign(new Error(`pwritev wrote nothing at ${at} of ${what}`), { code: 'EIO' });

/**
 * Write all of `buffers` (`total` bytes) to descriptor `fd` from `offset` with pwritev; a short write
 * continues where it stopped, a write that makes no progress fails with EIO (naming `what`). libuv
 * splits lists longer than IOV_MAX itself. Callback API: the hot path of device writes.
 */
export function writevAll(fd: number, offset: number, buffers: readonly Uint8Array[], total: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    let list = buffers;
    const step = (): void => {
      if (done >= total) return resolve();
      fsWritev(fd, list as Uint8Array[], offset + done, (err, bytesWritten) => {
        if (err) return reject(err);
        if (bytesWritten === 0) return reject(noProgress(offset + done, what));
        done += bytesWritten;
        list = dropWritten(list, bytesWritten);
        step();
      });
    };
    step();
  });
}

/** writevAll through a FileHandle (whose writev a test may replace to inject faults). */
export async function writevAllHandle(fh: FileHandle, offset: number, buffers: readonly Uint8Array[], total: number, what: string): Promise<void> {
  let done = 0;
  let list = buffers;
  while (done < total) {
    const { bytesWritten } = await fh.writev(list as Uint8Array[], offset + done);
    if (bytesWritten === 0) throw noProgress(offset + done, what);
    done += bytesWritten;
    list = dropWritten(list, bytesWritten);
  }
}
