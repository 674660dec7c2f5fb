/** `cfsdist pull REMOTE/NAME:TAG` and `cfsdist push NAME:TAG REMOTE` (src/client). */
import type { Command } from 'commander';
import { globals, info, out, outJson } from '../context.js';
import type { GlobalOptions } from '../context.js';
import { UsageError } from '../../errors.js';
import type { PushTarget } from '../../client/remote.js';
import { addTransportOptions } from '../transport-options.js';
import type { TransportCliOptions } from '../../client/transport.js';
import type { TransportOptions } from '../../client/transport.js';

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function positiveInt(v: string | undefined, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${what} must be a positive integer, not ${JSON.stringify(v)}`);
  return n;
}

function seconds(v: string | undefined, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${what} must be a positive number of seconds, not ${JSON.stringify(v)}`);
  return n;
}

/** Registers `pull` and `push`. */
export function register(program: Command): void {
  const pullCmd = program
    .command('pull')
    .description('fetch a signed image and only the objects the store lacks, verifying everything')
    .argument('<ref>', 'http://HOST:PORT/NAME[:TAG] (cfsdist server) or docker://HOST[:PORT]/REPO[:TAG] (OCI registry)')
    .option('--trust <pubkey>', 'trusted public key (repeatable; STORE/trust/*.pub are trusted too)', collect, [])
    .option('--dry-run', 'print the plan (what would be fetched, what is shared with local images); change nothing')
    .option('--no-delta', 'always fetch the full metadata image, never a delta from a local image')
    .option('--concurrency <n>', 'requests in flight (default 4)')
    .option('--timeout <seconds>', 'fail when the server sends nothing for this long (default 30)')
    .option('--compress <mode>', 'accepted encodings: auto (zstd or gzip, none to a loopback server), zstd, gzip, none')
    .option('--accept-unsigned', 'OCI registry: where no cfsdist image a trusted key signed is attached to the image, build it locally from its ordinary layers (recorded as unsigned)')
    .option('--platform <os/arch[/variant]>', 'OCI registry, local build: platform to pick from a multi-platform image (default: this machine)')
    .option('--no-daemon', 'do the pull in this process even when a cfsdist daemon serves the store');
  addTransportOptions(pullCmd, { registry: true });
  pullCmd.action(async (ref: string, opts: { trust: string[]; dryRun?: boolean; delta?: boolean; concurrency?: string; timeout?: string; compress?: string; acceptUnsigned?: boolean; platform?: string; daemon?: boolean } & TransportCliOptions, cmd: Command) => {
      const g = globals(cmd);
      const { transportFromCli } = await import('../../client/transport.js');
      const transport = transportFromCli(opts);
      if (transport.creds && !/^docker:\/\//.test(ref)) throw new UsageError('--creds applies to OCI registries (docker://…); a cfsdist server takes a bearer token');
      // A digest pins the image: no signature is needed to build it here.
      if (/^docker:\/\/[^@]+@sha256:/.test(ref)) return buildHere(g, ref, opts, transport);
      const { absolutePaths, pullRef } = await import('../../client/pull-ref.js');
      const req = absolutePaths({
        ref,
        trust: opts.trust,
        dryRun: opts.dryRun,
        deltas: opts.delta !== false,
        concurrency: positiveInt(opts.concurrency, '--concurrency', 4),
        timeoutMs: seconds(opts.timeout, '--timeout', 30) * 1000,
        compress: opts.compress,
        transport,
      });
      const { ProgressLine, humanBytes } = await import('../../client/progress.js');
      const bar = !g.quiet && !g.json && process.stderr.isTTY ? new ProgressLine(process.stderr, `pull ${ref.replace(/^[a-z]+:\/\/[^/]+\//, '')}`) : undefined;
      const hooks = {
        onProgress: bar ? (p: import('../../client/pull.js').PullProgress) => bar.update(p, p.phase !== 'objects') : undefined,
        onNotice: (line: string) => info(g, `notice: ${line}`),
      };
      let s;
      let r: { name: string; tag: string };
      try {
        // A running `cfsdist daemon` for this store does the pull (warm code, no start-up); the
        // result, progress and errors are the same as here.
        const { daemonFor } = await import('../../daemon/client.js');
        const d = opts.daemon === false ? undefined : await daemonFor(g.store);
        ({ summary: s, ...r } = d ? await d.pull(req, hooks) : await pullRef(g.store, req, hooks));
      } catch (e) {
        const { SignError } = await import('../../sign/errors.js');
        if (e instanceof SignError && (e.code === 'UNSIGNED' || e.code === 'UNTRUSTED') && /^docker:\/\//.test(ref)) {
          // --accept-unsigned: signed where it can be, else built here.
          if (opts.acceptUnsigned && !opts.dryRun) {
            info(g, `cfsdist: ${e.message}; building the image locally from its layers (--accept-unsigned)`);
            s = undefined;
            r = { name: '', tag: '' };
          } else {
            e.message += '. To build it here from its ordinary layers without a cfsdist signature, pull it by digest (docker://HOST/REPO@sha256:…) or with --accept-unsigned';
            throw e;
          }
        } else throw e;
      } finally {
        bar?.done();
      }
      if (!s) return buildHere(g, ref, opts, transport);
      if (g.json) return outJson(s);
      if (s.plan) {
        const p = s.plan;
        out(`plan for ${r.name}:${r.tag} version ${s.version} (image ${s.image}, signed by ${s.keyid.slice(0, 16)}…)`);
        if (s.delta) out(`  image: ${s.delta.kind === 'zpatch' ? 'binary ' : ''}delta from ${s.delta.base.slice(0, 16)}…: ${humanBytes(s.delta.bytes)} instead of the full image's ${humanBytes(s.delta.imageBytes)}`);
        else out(`  image: ${p.imageBytes ? `fetch ${humanBytes(p.imageBytes)} (no delta from a local image)` : 'already local'}`);
        out(`  objects needed: ${p.needed.count} (${humanBytes(p.needed.bytes)})`);
        out(`  present:        ${p.present.count} (${humanBytes(p.present.bytes)})`);
        if (p.resumed.count) out(`  resumed:        ${p.resumed.count} (${humanBytes(p.resumed.bytes)}) verified by an interrupted pull`);
        out(`  to fetch:       ${p.fetch.count} (${humanBytes(p.fetch.bytes)})`);
        for (const sh of p.shared) out(`  shares ${sh.objects} objects (${humanBytes(sh.bytes)}) with ${sh.name}:${sh.tag} (${sh.image.slice(0, 16)}…)`);
        const shown = p.objects.slice(0, 20);
        for (const o of shown) out(`  fetch ${o.digest}  ${humanBytes(o.size)}`);
        if (p.objects.length > shown.length) out(`  … and ${p.objects.length - shown.length} more (--json lists them all)`);
        return;
      }
      out(
        `pulled ${r.name}:${r.tag} version ${s.version}: image ${s.image}; objects ${s.objects.needed} needed, ${s.objects.present} present, ` +
          `${s.objects.resumed ? `${s.objects.resumed} resumed, ` : ''}${s.objects.fetched} fetched (${humanBytes(s.bytes.fetched)})`,
      );
      if (s.delta) info(g, `image rebuilt from a ${humanBytes(s.delta.bytes)} ${s.delta.kind === 'zpatch' ? 'binary ' : ''}delta (full image ${humanBytes(s.delta.imageBytes)})`);
      info(g, `${humanBytes(s.wire.received)} received in ${s.wire.requests} requests, ${s.seconds.toFixed(2)} s`);
    });

  const pushCmd = program
    .command('push')
    .description("send a signed image to a cfsdist server: statement, image and only the objects it lacks")
    .argument('<ref>', 'NAME[:TAG] (signed with cfsdist sign)')
    .argument('<remote>', 'http://HOST:PORT (cfsdist server) or docker://HOST[:PORT][/REPO] (OCI registry; REPO defaults to NAME)')
    .option('--token-file <file>', 'bearer token of the server (default $CFSDIST_TOKEN)')
    .option('--concurrency <n>', 'uploads in flight (default 4)')
    .option('--timeout <seconds>', 'fail when the server answers nothing for this long (default 30)')
    .option('--compress <mode>', 'upload encoding: auto (zstd or gzip, none to a loopback server), zstd, gzip, none')
    .option('--force', 'OCI registry: replace a tag that names another ordinary image (by default the cfsdist image is attached to the ordinary image it was imported from, and any other is left alone)');
  addTransportOptions(pushCmd, { registry: true });
  pushCmd.action(async (ref: string, url: string, opts: { tokenFile?: string; concurrency?: string; timeout?: string; compress?: string; force?: boolean } & TransportCliOptions, cmd: Command) => {
      const g = globals(cmd);
      const { transportFromCli } = await import('../../client/transport.js');
      const transport = transportFromCli(opts);
      if (transport.creds && !/^docker:\/\//.test(url)) throw new UsageError('--creds applies to OCI registries (docker://…); a cfsdist server takes --token-file');
      const concurrency = positiveInt(opts.concurrency, '--concurrency', 4);
      const timeout = seconds(opts.timeout, '--timeout', 30);
      const { parseRemoteBase, HttpRemote, push, ProgressLine, humanBytes } = await import('../../client/index.js');
      const { parseCompressMode } = await import('../../server/compress.js');
      const { parseRef } = await import('../../store/names.js');
      const { Store } = await import('../../store/store.js');
      const { name, tag } = parseRef(ref);
      let token = process.env.CFSDIST_TOKEN?.trim() || undefined;
      if (opts.tokenFile) {
        const { readFile } = await import('node:fs/promises');
        token = (await readFile(opts.tokenFile, 'utf8')).trim();
      }
      const store = await Store.open(g.store);
      let target: PushTarget;
      if (/^docker:\/\//.test(url)) {
        const { openRegistryRemote } = await import('../../registry/open-remote.js');
        target = openRegistryRemote(/^docker:\/\/[^/]+\/?$/.test(url) ? `${url.replace(/\/$/, '')}/${name}` : url, { force: opts.force, transport }).remote;
      } else {
        target = new HttpRemote(parseRemoteBase(url), { timeoutMs: timeout * 1000, compress: parseCompressMode(opts.compress), token, maxSockets: concurrency + 1, transport });
      }
      const bar = !g.quiet && !g.json && process.stderr.isTTY ? new ProgressLine(process.stderr, `push ${name}:${tag}`) : undefined;
      let s;
      try {
        s = await push({ store, target, name, tag, concurrency, onProgress: bar ? (p) => bar.update(p) : undefined });
      } finally {
        bar?.done();
        target.close();
      }
      if (g.json) return outJson(s);
      out(`pushed ${name}:${tag} version ${s.version} to ${s.remote}: objects ${s.objects.needed} needed, ${s.objects.present} already there, ${s.objects.sent} sent (${humanBytes(s.bytes.sent)})`);
      info(g, `${humanBytes(s.wire.sent)} sent in ${s.wire.requests} requests, ${s.seconds.toFixed(2)} s`);
    });
}

/** Build a registry image here from its ordinary layers, recorded as unsigned: for
 * `pull docker://…@sha256:…`, and for `pull --accept-unsigned` where no trusted signed image
 * is attached. */
async function buildHere(g: GlobalOptions, ref: string, opts: { platform?: string; dryRun?: boolean }, transport: TransportOptions): Promise<void> {
  if (opts.dryRun) throw new UsageError('--dry-run plans signed pulls; a local build of an unsigned image has no plan');
  const { Store } = await import('../../store/store.js');
  const { buildUnsigned } = await import('../../registry/local-build.js');
  const b = await buildUnsigned(ref, await Store.open(g.store, { create: true }), { platform: opts.platform, transport });
  if (g.json) return outJson({ ...b, signed: false });
  out(`built ${b.name}:${b.tag} locally: image ${b.image} (UNSIGNED: from ${b.unsignedFrom})`);
  info(g, `  ${b.imported.layers} layers, ${b.imported.entries} entries, ${b.imported.objectsNew} objects written; ${b.received} bytes received for ${b.layerBytes} bytes of layers`);
}
