/** Errors raised by the store. */
import { CfsError } from '../errors.js';

/** A store operation that failed: missing store, image, tag or object, bad name, busy lock. */
export class StoreError extends CfsError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Content whose fs-verity digest (or size) is not the one it was expected to have. */
export class DigestMismatchError extends StoreError {
  /** Expected digest (hex). */
  readonly expected: string;
  /** Digest of the bytes actually seen (hex). */
  readonly actual: string;
  constructor(what: string, expected: string, actual: string) {
    super('DIGEST_MISMATCH', `${what}: fs-verity digest mismatch: expected ${expected}, got ${actual}`);
    this.expected = expected;
    this.actual = actual;
  }
}
