/**
 * The cfsdist error family. Every error carries a stable `code` and names the file, line or
 * object at fault in its message. The CLI prints `cfsdist: <message>` and picks the exit code.
 */

/** Base class of every error cfsdist raises on purpose. */
export class CfsError extends Error {
  /** Stable machine-readable code, e.g. `DUMPFILE_SYNTAX`. */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bad command-line usage (exit code 2). */
export class UsageError extends CfsError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** A tree that cannot be built or written (bad names, limits, hardlinks). */
export class TreeError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}
