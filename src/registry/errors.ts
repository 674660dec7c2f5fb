/** Errors of the OCI registry transport. */
import { CfsError } from '../errors.js';

/**
 * A registry operation that failed. Codes: BAD_REF (not docker://HOST[:PORT]/REPO[:TAG]),
 * AUTH (credentials refused or missing), HTTP_STATUS (unexpected status; `status` set),
 * NOT_FOUND, NOT_CFSDIST (an ordinary image where a cfsdist artifact was expected),
 * BAD_MANIFEST, BAD_INDEX (malformed object index), NAME_MISMATCH, OBJECT_UNPLACED.
 */
export class RegistryError extends CfsError {
  /** HTTP status, when there was one. */
  readonly status?: number;
  constructor(code: string, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(code, message, { cause: opts.cause });
    this.status = opts.status;
  }
}
