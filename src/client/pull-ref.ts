/**
 * A signed pull named as a user names it (`http://HOST:PORT/NAME:TAG` or
 * `docker://HOST/REPO:TAG`) into a store directory: the remote opened, the trusted keys loaded
 * (given files and STORE/trust/*.pub), `pull` run, the remote closed. What `cfsdist pull` does,
 * in this process or in the daemon (src/daemon) — the request is plain data for that reason.
 */
import { resolve } from 'node:path';
import type { TransportOptions } from './transport.js';
import type { PullProgress, PullSummary, Remote } from './index.js';
import type { Store } from '../store/store.js';

/** A pull as plain data (paths absolute, so another process reads the same files). */
export interface PullRequest {
  ref: string;
  /** Trusted public key files. */
  trust: string[];
  dryRun?: boolean;
  /** Try image deltas from local images (default true). */
  deltas?: boolean;
  concurrency: number;
  timeoutMs: number;
  /** `--compress` as given (auto, zstd, gzip, none). */
  compress?: string;
  transport: TransportOptions;
}

/** Make a request's file names absolute (against this process's working directory). */
export function absolutePaths(r: PullRequest): PullRequest {
  const t = { ...r.transport };
  if (t.caFiles) t.caFiles = t.caFiles.map((f) => resolve(f));
  return { ...r, trust: r.trust.map((f) => resolve(f)), transport: t };
}

/** Run a pull request against a store: an open one (the daemon's, whose fs-verity probe and
 * caches then serve every request), or the one at a directory (created unless a dry run; a
 * dry run of a missing store plans against an empty scratch one and leaves nothing). */
export async function pullRef(
  storeOrDir: string | Store,
  req: PullRequest,
  hooks: { onProgress?: (p: PullProgress) => void; onNotice?: (line: string) => void } = {},
): Promise<{ name: string; tag: string; summary: PullSummary }> {
  const { parseRemoteRef, HttpRemote, pull } = await import('./index.js');
  const { parseCompressMode } = await import('../server/compress.js');
  const { Store } = await import('../store/store.js');
  const { loadTrustedKeys } = await import('../sign/keys.js');
  const { SignRecords } = await import('../sign/records.js');
  const compress = parseCompressMode(req.compress);
  let r: { name: string; tag: string };
  let remote: Remote;
  if (/^docker:\/\//.test(req.ref)) {
    // An OCI registry behind the same pipeline (src/registry; credentials from --creds,
    // CFSDIST_REGISTRY_USER/PASSWORD or the Docker config file, src/registry/auth.ts).
    const { openRegistryRemote } = await import('../registry/open-remote.js');
    const o = openRegistryRemote(req.ref, { transport: req.transport });
    r = { name: o.name, tag: o.tag };
    remote = o.remote;
  } else {
    const h = parseRemoteRef(req.ref);
    r = h;
    remote = new HttpRemote(h.base, { timeoutMs: req.timeoutMs, compress, maxSockets: req.concurrency + 1, transport: req.transport });
  }
  const { existsSync } = await import('node:fs');
  let scratch: string | undefined;
  try {
    const storeDir = typeof storeOrDir === 'string' ? storeOrDir : storeOrDir.dir;
    if (typeof storeOrDir === 'string' && req.dryRun && !existsSync(storeDir)) {
      const { mkdtemp } = await import('node:fs/promises');
      const { tmpdir } = await import('node:os');
      const { join } = await import('node:path');
      scratch = await mkdtemp(join(tmpdir(), 'cfsdist-plan-'));
    }
    const store = typeof storeOrDir !== 'string' ? storeOrDir : await Store.open(scratch ?? storeDir, { create: !req.dryRun || scratch !== undefined });
    const trusted = await loadTrustedKeys(req.trust, new SignRecords(storeDir).trustDir);
    const summary = await pull({
      store, remote, name: r.name, tag: r.tag, trusted, dryRun: req.dryRun, concurrency: req.concurrency, deltas: req.deltas !== false,
      onProgress: hooks.onProgress,
      onNotice: hooks.onNotice,
    });
    return { ...r, summary };
  } finally {
    remote.close();
    if (scratch) {
      const { rm } = await import('node:fs/promises');
      await rm(scratch, { recursive: true, force: true });
    }
  }
}
