import { ExitCode, TidemarkError } from '../errors.js';

/** The tidemark_native addon was not built or cannot be loaded on this host. */
export class NativeAddonError extends TidemarkError {
  constructor(detail: string, options?: { cause?: unknown }) {
    super(
      'E_NATIVE',
      `tidemark native addon unavailable: ${detail}; build it with \`npm run build\` (needs a C compiler and Node headers) or \`npm install\``,
      { detail },
      ExitCode.UNSUPPORTED,
      options,
    );
  }
}
