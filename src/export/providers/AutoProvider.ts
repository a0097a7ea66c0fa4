import { ProviderNotSupportedError } from '../errors.js';
import { CopyProvider } from './CopyProvider.js';
import { ReflinkProvider } from './ReflinkProvider.js';
import type { CloneResult, SnapshotProvider } from './SnapshotProvider.js';

/** `auto`: a reflink when the filesystem shares extents, else the sparse streaming copy. Never NotSupported. */
export class AutoProvider implements SnapshotProvider {
  readonly name = 'auto' as const;
  private readonly reflink = new ReflinkProvider();
  private readonly copy = new CopyProvider();

  async clone(src: string, dst: string, onProgress?: (done: number, total: number) => void): Promise<CloneResult> {
    try {
      return await this.reflink.clone(src, dst, onProgress);
    } catch (err) {
      if (!(err instanceof ProviderNotSupportedError)) throw err;
      return this.copy.clone(src, dst, onProgress);
    }
  }
}
