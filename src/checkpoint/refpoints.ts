/** Reference points: what remains of a backup checkpoint once an export read it (see docs/design.md (machines section)). */
import { Inventory, type RefpointRecord } from '../vm/Inventory.js';
import { findMachine, resolveTargets } from '../vm/machines.js';
import { VmNotFoundError } from '../vm/errors.js';
import { openRctHandle } from '../rct/openRctHandle.js';
import { recoverMachine } from './recover.js';

export async function listRefpoints(home: string, ref: string): Promise<Array<RefpointRecord & { machine: string }>> {
  return Inventory.transact(home, async (state) => {
    const out = [];
    for (const m of resolveTargets(state, ref)) {
      await recoverMachine(m);
      out.push(...m.refpoints.map((r) => ({ machine: m.name, ...structuredClone(r) })));
    }
    return out;
  });
}

/** Remove a reference point and drop its RCT IDs (their changes fold into the previous ID's). */
export async function removeRefpoint(home: string, vm: string, id: string): Promise<RefpointRecord> {
  return Inventory.transact(home, async (state) => {
    const m = findMachine(state, vm);
    await recoverMachine(m);
    const r = m.refpoints.find((x) => x.id === id);
    if (!r) throw new VmNotFoundError('reference point', id, `run \`tidemark refpoint list ${m.name}\``);
    await dropRefpointRctIds(r);
    m.refpoints = m.refpoints.filter((x) => x !== r);
    return r;
  });
}

/**
 * Drop the RCT ID `r` recorded on each of its disks (the changes since it fold into the disk's previous
 * ID). Best effort and never throws for a disk: one whose tracking is already invalid or gone has
 * nothing to drop. Does not remove `r` from the inventory (the caller does, in its transaction).
 */
export async function dropRefpointRctIds(r: RefpointRecord): Promise<void> {
  for (const d of r.disks) {
    try {
      const h = await openRctHandle(d.path, { mutate: true });
      try {
        await h.drop(d.rctId);
      } finally {
        await h.close();
      }
    } catch {
      // Tracking already invalid or gone: nothing to drop.
    }
  }
}
