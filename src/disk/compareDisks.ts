import { withContext } from '../errors.js';
import { type CompareOptions, type CompareResult, compareDevices } from './compareDevices.js';
import { openDisk } from './openDisk.js';

/**
 * Compare the virtual content of two disks of any formats (detected by content), both opened read-only.
 * Equal means same virtual size and same bytes; see compareDevices for `firstDifference`.
 */
export async function compareDisks(a: string, b: string, opts: CompareOptions = {}): Promise<CompareResult> {
  const da = await openDisk(a, { readOnly: true });
  try {
    const db = await openDisk(b, { readOnly: true });
    try {
      return await withContext(`compare ${a} with ${b}`, compareDevices(da, db, opts));
    } finally {
      await db.close();
    }
  } finally {
    await da.close();
  }
}
