import { ExitCode, TidemarkError } from '../errors.js';

/** No machine (or group, checkpoint, reference point) by that name or ID in the inventory. */
export class VmNotFoundError extends TidemarkError {
  constructor(kind: 'machine' | 'group' | 'checkpoint' | 'reference point', ref: string, hint = '') {
    super('E_VM_NOT_FOUND', `${kind} "${ref}" not found in the inventory${hint ? `: ${hint}` : ''}`, { kind, ref }, ExitCode.NOT_FOUND);
  }
}

/** A machine/group with that name or ID already exists. */
export class VmExistsError extends TidemarkError {
  constructor(kind: 'machine' | 'group', ref: string, hint: string) {
    super('E_VM_EXISTS', `${kind} "${ref}" already exists in the inventory: ${hint}`, { kind, ref }, ExitCode.USAGE);
  }
}

/** The inventory file or a machine configuration fails validation. */
export class ConfigInvalidError extends TidemarkError {
  constructor(where: string, problems: string[]) {
    super('E_CONFIG_INVALID', `${where}: invalid machine configuration: ${problems.join('; ')}`, { where, problems }, ExitCode.CORRUPT);
  }
}

/** The machine is held (by a backup checkpoint of a live process) and cannot be changed now. */
export class VmBusyError extends TidemarkError {
  constructor(machine: string, holder: string) {
    super('E_VM_BUSY', `machine "${machine}" is held by ${holder}; wait for it to finish (or kill it; the next command recovers)`, { machine, holder }, ExitCode.IN_USE);
  }
}
