/**
 * Image names and tags in the store, OCI-like:
 *   NAME = component ('/' component)*, component = [a-z0-9]+ ((. | _ | __ | -+) [a-z0-9]+)*,
 *          at most 255 characters in all;
 *   TAG  = [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
 * No component can be empty, `.` or `..`, so a name is always a safe relative path.
 */
import { StoreError } from './errors.js';

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** The tag a reference without `:TAG` means. */
export const DEFAULT_TAG = 'latest';

/** True if `name` is a valid image name. */
export function isValidName(name: string): boolean {
  return typeof name === 'string' && name.length > 0 && name.length <= 255 && name.split('/').every((c) => COMPONENT.test(c));
}

/** True if `tag` is a valid tag. */
export function isValidTag(tag: string): boolean {
  return typeof tag === 'string' && TAG.test(tag);
}

/** Throw StoreError BAD_NAME unless `name` is valid. */
export function checkName(name: string): void {
  if (!isValidName(name)) {
    throw new StoreError('BAD_NAME', `invalid image name ${JSON.stringify(name)} (lowercase letters, digits, separators . _ __ -, components joined by /)`);
  }
}

/** Throw StoreError BAD_TAG unless `tag` is valid. */
export function checkTag(tag: string): void {
  if (!isValidTag(tag)) {
    throw new StoreError('BAD_TAG', `invalid tag ${JSON.stringify(tag)} (letters, digits, _ . -, at most 128, not starting with . or -)`);
  }
}

/** Split and validate `NAME[:TAG]` (tag defaults to `latest`). */
export function parseRef(ref: string): { name: string; tag: string } {
  const colon = ref.lastIndexOf(':');
  const slash = ref.lastIndexOf('/');
  const name = colon > slash ? ref.slice(0, colon) : ref;
  const tag = colon > slash ? ref.slice(colon + 1) : DEFAULT_TAG;
  checkName(name);
  checkTag(tag);
  return { name, tag };
}

/** STORE/<this>/<IMAGE HEX>.p7s: kernel fs-verity builtin signatures of images (DER PKCS#7). */
export const FSVERITY_SIGNATURES_DIR = 'fsverity-signatures';
