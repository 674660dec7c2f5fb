/** Shared test helpers: paths to the repo, the shared vectors and the reference binaries. */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/test/). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The test vectors, part of the repository (test/vectors/README.md says what they are). */
export const VECTORS = resolve(REPO, 'test', 'vectors');
/** Upstream reference binaries (oracle only, optional): $CFSDIST_REFERENCE_BIN, default
 * ../shared/reference-bin beside the checkout. */
export const REFERENCE_BIN = process.env.CFSDIST_REFERENCE_BIN ? resolve(process.env.CFSDIST_REFERENCE_BIN) : resolve(REPO, '..', 'shared', 'reference-bin');
/** The CLI entry point. */
export const CLI = join(REPO, 'bin', 'cfsdist');

/** A skip reason when the vectors are absent, else false. */
export function vectorsMissing(): string | false {
  return existsSync(VECTORS) ? false : `test vectors not found at ${VECTORS} (they are part of the repository: is the checkout complete?)`;
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

/** Run the CLI with `args` (and extra environment); its output as text. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** What lstat says of one path (see lstatTree). */
export interface StatEntry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  mtimeNs: bigint;
  rdev: bigint;
  nlink: bigint;
  ino: bigint;
}

/** lstat of every path under `root`, keyed by the path below it (latin1; `/` for the root). */
export function lstatTree(root: string): Map<string, StatEntry> {
  const out = new Map<string, StatEntry>();
  const rec = (rel: string): void => {
    const p = Buffer.from(root + rel, 'latin1');
    const st = lstatSync(p, { bigint: true });
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'lnk' : st.isFile() ? 'reg' : st.isFIFO() ? 'fifo' : st.isSocket() ? 'sock' : st.isCharacterDevice() ? 'chr' : 'blk';
    out.set(rel || '/', { type, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: st.size, mtimeNs: st.mtimeNs, rdev: st.rdev, nlink: st.nlink, ino: st.ino });
    if (st.isDirectory()) for (const n of readdirSync(p, { encoding: 'buffer' }) as Buffer[]) rec(rel + '/' + n.toString('latin1'));
  };
  rec('');
  return out;
}

/** What part of node:test's context the skip helpers use. */
interface SkipContext {
  skip(message?: string): void;
}

/**
 * A Debian tool a check needs is missing: under CI=true (where test.sh installed everything)
 * that is a failure; elsewhere a visible skip of the test, with the reason printed.
 * Returns only when the check should be left out.
 */
export function toolMissing(t: SkipContext, reason: string): void {
  if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: test.sh installs it, so this is a failure, not a skip)`);
  process.stderr.write(`skipped: ${reason}\n`);
  t.skip(reason);
}

/** The optional C reference binaries are absent: always a visible skip (never a failure). */
export function referenceMissing(t: SkipContext, reason: string): void {
  process.stderr.write(`skipped: ${reason} (set CFSDIST_REFERENCE_BIN)\n`);
  t.skip(reason);
}
