/** Errors of the run module. */
import { CfsError } from '../errors.js';

/** A container that cannot be set up or run; the message names the image field, user or path at fault. */
export class RunError extends CfsError {
  /** Exit status of the CLI: 125, as docker and podman use for their own failures (so it is
   * never mistaken for the container's status). */
  readonly exitCode = 125;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
