/** Errors of the mount module. */
import { CfsError } from '../errors.js';

/** A mount or unmount that cannot be done; the message names the mount point, image or object. */
export class MountError extends CfsError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
