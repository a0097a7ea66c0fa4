import { OBJECT_TYPES, type ObjectType } from './Backend.js';
import { InvalidObjectNameError } from './errors.js';

const NAME = /^[0-9a-zA-Z._-]{2,128}$/;

/** Validate an object type. */
export function checkType(type: ObjectType): void {
  if (!(OBJECT_TYPES as readonly string[]).includes(type)) throw new InvalidObjectNameError(String(type), '');
}

/** Validate an object key at a backend's edge: a name is never a path. */
export function checkName(type: ObjectType, name: string): void {
  if (!(OBJECT_TYPES as readonly string[]).includes(type) || typeof name !== 'string' || !NAME.test(name) || name.startsWith('.')) {
    throw new InvalidObjectNameError(String(type), String(name));
  }
}
