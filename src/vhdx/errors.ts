import { CorruptError, ExitCode, TidemarkError } from '../errors.js';

export { CorruptError };

/** The VHDX log holds entries that were never applied; a read-only open would show stale metadata. */
export class VhdxDirtyLogError extends TidemarkError {
  constructor(file: string) {
    super(
      'E_VHDX_DIRTY_LOG',
      `${file}: the VHDX log holds un-replayed metadata updates (the file was not closed cleanly); ` +
        `replay it with \`tidemark disk check --repair ${file}\` (or open it read-write)`,
      { file },
      ExitCode.CORRUPT,
    );
  }
}

/** A differencing disk's parent file could not be found at any recorded location. */
export class VhdxParentMissingError extends TidemarkError {
  constructor(child: string, tried: string[]) {
    super(
      'E_VHDX_PARENT_MISSING',
      `${child}: parent disk not found (tried ${tried.map((p) => `"${p}"`).join(', ') || 'no recorded path'}); ` +
        `put the parent back at one of these paths`,
      { file: child, tried },
      ExitCode.NOT_FOUND,
    );
  }
}

/** The parent's DataWriteGuid differs from the child's parent_linkage: the parent changed after the child was made. */
export class VhdxParentMismatchError extends TidemarkError {
  constructor(child: string, parent: string, linkage: string, actual: string, mergePending: boolean) {
    super(
      'E_VHDX_PARENT_MISMATCH',
      `${child}: parent ${parent} was modified after this differencing disk was created ` +
        `(parent_linkage {${linkage}} but the parent's DataWriteGuid is {${actual}}); ` +
        (mergePending
          ? `a merge of this disk was interrupted: run the merge again to finish it`
          : `the chain is broken: restore the original parent`),
      { file: child, parent, linkage, actual, mergePending },
      ExitCode.CORRUPT,
    );
  }
}

/** A feature of the file that this implementation does not handle (e.g. an unknown required region). */
export class VhdxUnsupportedError extends TidemarkError {
  constructor(file: string, what: string) {
    super('E_VHDX_UNSUPPORTED', `${file}: ${what} is not supported`, { file, what }, ExitCode.UNSUPPORTED);
  }
}

/** Shrinking would discard allocated data. */
export class VhdxShrinkError extends TidemarkError {
  constructor(file: string, newSize: number, lostBlocks: number) {
    super(
      'E_VHDX_SHRINK_LOSES_DATA',
      `${file}: shrinking to ${newSize} bytes would discard ${lostBlocks} allocated block(s) beyond the new end; ` +
        `pass force to discard them`,
      { file, newSize, lostBlocks },
      ExitCode.USAGE,
    );
  }
}
