/** Errors of exports, imports and snapshot providers. */
import { ExitCode, TidemarkError } from '../errors.js';

/**
 * A differential export's base is not where its manifest says (the base export directory was removed,
 * moved apart from this one, or is incomplete). Nothing was imported.
 */
export class ExportBaseMissingError extends TidemarkError {
  constructor(exportDir: string, slot: number, missing: string, baseExportDir: string | undefined, detail = 'not found') {
    super(
      'E_EXPORT_BASE_MISSING',
      `export ${exportDir}: disk slot ${slot} is a differential over ${missing}, which is ${detail}; ` +
        `a differential export imports by chaining onto its base exports: copy the base export ` +
        `${baseExportDir ? `(${baseExportDir}) ` : ''}back beside this one (the same relative place) and import again, ` +
        `or import a full or synthetic-full export (\`tidemark export --merge\`) instead`,
      { exportDir, slot, missing, ...(baseExportDir ? { baseExportDir } : {}) },
      ExitCode.NOT_FOUND,
    );
  }
}

/**
 * A snapshot provider cannot work here (reflink on a filesystem without it, or across filesystems).
 * Nothing was left behind in the destination.
 */
export class ProviderNotSupportedError extends TidemarkError {
  constructor(provider: string, src: string, dst: string, reason: string, hint: string) {
    super(
      'E_PROVIDER_NOT_SUPPORTED',
      `snapshot provider ${provider} cannot clone ${src} to ${dst}: ${reason}; ${hint}`,
      { provider, src, dst, reason },
      ExitCode.UNSUPPORTED,
    );
  }
}
