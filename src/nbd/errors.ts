import { ExitCode, TidemarkError } from '../errors.js';

/** An option payload (handshake phase) is malformed; answered with NBD_REP_ERR_INVALID. */
export class NbdOptionFormatError extends TidemarkError {
  constructor(option: number, detail: string) {
    super('E_NBD_OPTION', `NBD option ${option}: ${detail}`, { option }, ExitCode.USAGE);
  }
}

/** The server was configured wrongly (duplicate export names, unreadable TLS files, bad address). */
export class NbdConfigError extends TidemarkError {
  constructor(detail: string, data: Record<string, unknown> = {}) {
    super('E_NBD_CONFIG', `NBD server: ${detail}`, data, ExitCode.USAGE);
  }
}
