/** Errors of metadata deltas (a module of its own so that applying a binary delta does not load
 * the tree-delta machinery: the dumpfile parser and writer, the EROFS writer). */
import { CfsError } from '../errors.js';

/** A delta that cannot be made or applied (wrong base, corrupt, or not reproducing). */
export class DeltaError extends CfsError {}
