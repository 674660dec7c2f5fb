/**
 * What every command needs: global options, output helpers, and the error → exit code policy.
 * Command modules import library code lazily inside their actions so `--help` stays fast.
 */
import type { Command } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../errors.js';

/** Global flags, accepted before or after the subcommand. */
export interface GlobalOptions {
  store: string;
  json: boolean;
  quiet: boolean;
  debug: boolean;
}

/** The store directory: --store, else $CFSDIST_STORE, else a per-user or system default. */
export function defaultStore(): string {
  if (process.env.CFSDIST_STORE) return process.env.CFSDIST_STORE;
  if (process.getuid?.() === 0) return '/var/lib/cfsdist';
  return join(homedir(), '.local', 'share', 'cfsdist');
}

/** Merge the program-level and command-level global flags. */
export function globals(cmd: Command): GlobalOptions {
  const o = cmd.optsWithGlobals() as Partial<GlobalOptions>;
  return {
    store: o.store ?? defaultStore(),
    json: Boolean(o.json),
    quiet: Boolean(o.quiet),
    debug: Boolean(o.debug),
  };
}

/** Write a line to stdout. */
export function out(line: string): void {
  process.stdout.write(line + '\n');
}

/** Write a progress / status line to stderr unless --quiet. */
export function info(g: GlobalOptions, line: string): void {
  if (!g.quiet) process.stderr.write(line + '\n');
}

/** Print a JSON document on stdout. */
export function outJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** The most bytes a file may have to be inlined: the dumpfile format's limit on inline content. */
const INLINE_LIMIT = 5000;

/** Parse `--inline-max BYTES` (0 … 5000). */
export function inlineMaxArg(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v) || Number(v) > INLINE_LIMIT) throw new UsageError(`--inline-max takes a number of bytes from 0 to ${INLINE_LIMIT}, got ${JSON.stringify(v)}`);
  return Number(v);
}
