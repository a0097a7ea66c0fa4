import { ClosedError } from '../errors.js';

/**
 * Admission control for a device's operations: `run` admits work while open; `close` stops admitting
 * (later calls reject with ClosedError) and resolves once the admitted work has finished. Devices that
 * hand raw file descriptors to native calls rely on this: the fd is only closed after the last call using
 * it has settled, so a reused descriptor number can never be acted on.
 */
export class Gate {
  private active = 0;
  private closing = false;
  private idle: (() => void) | undefined;

  constructor(private readonly what: string) {}

  get closed(): boolean {
    return this.closing;
  }

  /** Throws ClosedError once closing has begun. For synchronous checks outside `run`. */
  check(): void {
    if (this.closing) throw new ClosedError(this.what);
  }

  /** Run `op` if open (else reject with ClosedError), counting it as in flight until it settles. */
  async run<T>(op: () => Promise<T>): Promise<T> {
    this.check();
    this.active++;
    try {
      return await op();
    } finally {
      if (--this.active === 0) this.idle?.();
    }
  }

  /** Stop admitting work; resolves when nothing is in flight. Idempotent. */
  close(): Promise<void> {
    this.closing = true;
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.idle;
      this.idle = () => {
        prev?.();
        resolve();
      };
    });
  }
}
