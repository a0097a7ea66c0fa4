import { ClosedError, NotSupportedError, OutOfRangeError, ReadOnlyError } from '../errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN } from './protocol.js';

/**
 * The NBD error value for a failed device call. `writing` selects ENOSPC for out-of-range writes (the spec's
 * choice) over EINVAL; `fastZero` lets NotSupportedError become ENOTSUP (only allowed for FAST_ZERO).
 */
export function nbdErrorCode(err: unknown, opts: { writing?: boolean; fastZero?: boolean } = {}): number {
  if (err instanceof OutOfRangeError) return opts.writing ? NBD_ENOSPC : NBD_EINVAL;
  if (err instanceof ReadOnlyError) return NBD_EPERM;
  if (err instanceof NotSupportedError) return opts.fastZero ? NBD_ENOTSUP : NBD_EINVAL;
  if (err instanceof ClosedError) return NBD_ESHUTDOWN;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'ENOMEM':
      return NBD_ENOMEM;
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return NBD_EPERM;
    default:
      return NBD_EIO;
  }
}
