import { UsageError } from '../../errors.js';
import { AutoProvider } from './AutoProvider.js';
import { CopyProvider } from './CopyProvider.js';
import { ReflinkProvider } from './ReflinkProvider.js';
import type { ProviderName, SnapshotProvider } from './SnapshotProvider.js';

export const PROVIDER_NAMES: readonly ProviderName[] = ['reflink', 'copy', 'auto'];

/** The provider called `name`; UsageError listing the names for anything else. */
export function getProvider(name: string): SnapshotProvider {
  switch (name) {
    case 'reflink': return new ReflinkProvider();
    case 'copy': return new CopyProvider();
    case 'auto': return new AutoProvider();
    default: throw new UsageError(`unknown snapshot provider "${name}"; use one of ${PROVIDER_NAMES.join(', ')}`);
  }
}
