import { ExitCode, TidemarkError } from '../errors.js';

/** `create` refused to overwrite an existing file. */
export class AlreadyExistsError extends TidemarkError {
  constructor(file: string) {
    super('E_EXISTS', `${file} already exists; choose another path or remove it first`, { file }, ExitCode.USAGE);
  }
}

/** The file behind a device ended before the device's size: someone truncated it while it was open. */
export class TruncatedFileError extends TidemarkError {
  constructor(file: string, offset: number, size: number) {
    super(
      'E_TRUNCATED',
      `${file}: read at ${offset} hit end of file but the device is ${size} bytes; another program truncated it — stop it and check the image`,
      { file, offset, size },
      ExitCode.IO,
    );
  }
}
