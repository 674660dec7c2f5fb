/**
 * Errors raised while reading image sources, tar layers and compressed streams.
 */
import { CfsError } from '../errors.js';

/** A malformed, truncated or unsupported tar stream; the message names the byte offset. */
export class TarError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/** A layer whose compression cannot be read (bad gzip/zstd data, missing zstd tool). */
export class DecompressError extends CfsError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** An image source that cannot be read: bad layout, manifest, digest mismatch. */
export class SourceError extends CfsError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** A layer whose entries cannot be turned into a tree (bad paths, dangling hardlinks). */
export class LayerError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}
