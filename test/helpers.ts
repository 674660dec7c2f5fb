/** Shared test helpers: paths to the repo, the shared vectors and the reference binaries. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/test/). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** ../shared/vectors beside the checkout. */
export const VECTORS = resolve(REPO, '..', 'shared', 'vectors');
/** Upstream reference binaries (oracle only). */
export const REFERENCE_BIN = resolve(REPO, '..', 'shared', 'reference-bin');
/** The CLI entry point. */
export const CLI = join(REPO, 'bin', 'cfsdist');

/** A skip reason when the vectors are absent, else false. */
export function vectorsMissing(): string | false {
  return existsSync(VECTORS) ? false : `test vectors not found at ${VECTORS}`;
}

/** A skip reason when not running as root, else false. */
export function notRoot(): string | false {
  return process.getuid?.() === 0 ? false : 'needs root (mounts); CI runs as root';
}

/** Parse a vectors EXPECTED.tsv into rows. */
export function parseTsv(text: string): Record<string, string>[] {
  const [head, ...rows] = text.trim().split('\n');
  const cols = head!.split('\t');
  return rows.map((r) => Object.fromEntries(r.split('\t').map((v, i) => [cols[i]!, v])));
}
