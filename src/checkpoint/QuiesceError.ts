import { ExitCode, TidemarkError } from '../errors.js';

/** A running machine could not be quiesced (no agent answered, no hooks or they failed) and no fallback was allowed. */
export class QuiesceFailedError extends TidemarkError {
  constructor(machine: string, reasons: string[]) {
    super('E_QUIESCE_FAILED',
      `cannot quiesce machine ${machine} for an application-consistent checkpoint: ${reasons.join('; ')}. ` +
      'Install and start qemu-guest-agent in the guest, or configure hooks (tidemark vm set ' + machine + ' --freeze-hook PATH --thaw-hook PATH), ' +
      'or pass --fallback crash to accept a crash-consistent checkpoint',
      { machine, reasons }, ExitCode.UNSUPPORTED);
  }
}

/**
 * The quiesced operation succeeded but thawing the guest failed: its filesystems may still be frozen.
 * The next quiesce of the machine thaws a stale freeze first.
 */
export class QuiesceThawError extends TidemarkError {
  constructor(machine: string, method: 'guest-agent' | 'hooks', detail: string) {
    super('E_QUIESCE_THAW',
      `machine ${machine}: the quiesced operation succeeded (the checkpoint exists) but thawing the guest (${method}) failed: ${detail}. ` +
      `The guest may still be frozen: the next quiesce of ${machine} thaws it first` +
      (method === 'guest-agent' ? ' (or send guest-fsfreeze-thaw to its agent yourself)' : ' (or run its thaw hook yourself)'),
      { machine, method, detail }, ExitCode.IO);
  }
}
