/** Errors raised while signing or verifying statements. */
import { CfsError } from '../errors.js';

/**
 * A signature or statement problem. Codes: KEY_READ, KEY_TYPE, KEY_EXISTS, ENVELOPE_MALFORMED,
 * STATEMENT_MALFORMED, UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, EXPIRED, NOT_YET_VALID,
 * WRONG_SUBJECT, ROLLBACK, EQUIVOCATION, IMAGE_MISMATCH, NO_TRUST, CERT_MALFORMED.
 */
export class SignError extends CfsError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
