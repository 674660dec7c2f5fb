/** Errors of the client side (transport, pull, push). */
import { CfsError } from '../errors.js';

/**
 * A transport failure. Codes: TIMEOUT (no data for the idle timeout), NETWORK (connection
 * failed or reset), TRUNCATED (body shorter than declared), TOO_LONG (body longer than declared
 * or expected), HTTP_STATUS (unexpected status; `status` set), AUTH (401/403), ABORTED.
 */
export class TransportError extends CfsError {
  /** HTTP status, when there was one. */
  readonly status?: number;
  constructor(code: string, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(code, message, { cause: opts.cause });
    this.status = opts.status;
  }
}

/** A pull or push that cannot proceed: bad reference, image mismatch, missing data. */
export class PullError extends CfsError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
