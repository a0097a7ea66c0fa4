/**
 * Errors of the guest agent client (src/vm/GuestAgent.ts). Each names the socket and says what to do:
 * install qemu-guest-agent in the guest, configure freeze/thaw hooks, or accept a crash-consistent
 * checkpoint with `--fallback crash`.
 */
import { ExitCode, TidemarkError } from '../errors.js';

const WHAT_TO_DO =
  'install and start qemu-guest-agent in the guest (it talks on the virtio-serial port org.qemu.guest_agent.0), ' +
  'or configure freeze/thaw hooks (tidemark vm set <vm> --freeze-hook PATH --thaw-hook PATH), ' +
  'or use --fallback crash to accept a crash-consistent checkpoint';

/** No agent channel: the socket does not exist or nobody listens (machine not running, or started without the port). */
export class GuestAgentAbsentError extends TidemarkError {
  constructor(socket: string, reason: string) {
    super('E_QGA_ABSENT', `no guest agent channel at ${socket} (${reason}): the machine is not running, or was started by a Tidemark without the guest agent port (restart it with tidemark vm start); otherwise ${WHAT_TO_DO}`, { socket, reason }, ExitCode.UNSUPPORTED);
  }
}

/** The channel exists (QEMU listens) but no agent answered in time, or the connection closed. */
export class GuestAgentNotRespondingError extends TidemarkError {
  constructor(socket: string, command: string, detail: string) {
    super('E_QGA_NO_ANSWER', `the guest agent did not answer ${command} on ${socket} (${detail}): ${WHAT_TO_DO}`, { socket, command, detail }, ExitCode.UNSUPPORTED);
  }
}

/** The agent answered with an error. */
export class GuestAgentCommandError extends TidemarkError {
  constructor(socket: string, command: string, errorClass: string, desc: string) {
    super('E_QGA_COMMAND', `guest agent command ${command} failed on ${socket}: ${errorClass}: ${desc}`, { socket, command, errorClass, desc }, ExitCode.IO);
  }
}
