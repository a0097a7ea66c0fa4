import { ExitCode, TidemarkError } from '../errors.js';

/** The file holds a disk format Tidemark does not read (qcow2, VMDK, VHD, VDI, QED). */
export class UnsupportedDiskFormatError extends TidemarkError {
  constructor(file: string, format: string) {
    super(
      'E_DISK_FORMAT',
      `${file} is a ${format} image; Tidemark reads VHDX and raw disks: convert it first (e.g. \`qemu-img convert -O vhdx ${file} ${file}.vhdx\`)`,
      { file, format },
      ExitCode.UNSUPPORTED,
    );
  }
}

/** The output path of a create already exists: Tidemark never overwrites a disk it was asked to create. */
export class DiskExistsError extends TidemarkError {
  constructor(file: string) {
    super('E_EXISTS', `${file} already exists; delete it first or choose another name`, { file }, ExitCode.USAGE);
  }
}

/** An operation does not apply to this disk (merge of a disk without a parent, --parent on raw, ...). */
export class DiskOperationError extends TidemarkError {
  constructor(file: string, message: string, data: Record<string, unknown> = {}) {
    super('E_DISK_OPERATION', `${file}: ${message}`, { file, ...data }, ExitCode.USAGE);
  }
}

/** The caller aborted a long operation (e.g. Ctrl-C during convert); nothing was committed. */
export class OperationAbortedError extends TidemarkError {
  constructor(what: string) {
    super('E_ABORTED', `${what} interrupted; nothing was committed (an existing output file is unchanged)`, { what }, 130);
  }
}
