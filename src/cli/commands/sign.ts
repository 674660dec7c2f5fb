/**
 * `cfsdist key generate|trust`, `cfsdist sign NAME:TAG`, `cfsdist verify NAME:TAG`: ed25519
 * keys, DSSE-signed image statements, and the kernel fs-verity builtin signature.
 */
import type { Command } from 'commander';
import { globals, info, out, outJson } from '../context.js';
import { UsageError } from '../../errors.js';
import { addTransportOptions } from '../transport-options.js';
import type { TransportCliOptions } from '../../client/transport.js';

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** Registers `key generate`, `key trust`, `sign` and `verify`. */
export function register(program: Command): void {
  const key = program.command('key').description('signing keys (ed25519)');
  key
    .command('generate')
    .description('write a new ed25519 key pair: KEY (private, PKCS#8 PEM, mode 0600) and KEY.pub')
    .requiredOption('--out <key>', 'private key file (the public key goes to KEY.pub)')
    .option('--force', 'replace existing files')
    .action(async (opts: { out: string; force?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const { writeKeyPair } = await import('../../sign/keys.js');
      const r = await writeKeyPair(opts.out, { force: opts.force });
      if (g.json) return outJson(r);
      out(`keyid ${r.keyid}`);
      info(g, `wrote ${r.privatePath} (private) and ${r.publicPath} (public)`);
    });
  key
    .command('trust')
    .description("trust a public key by default: copy it into the store's trust/ directory")
    .argument('<pubkey>', 'public key file (PEM)')
    .action(async (path: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { loadPublicKey, SignRecords } = await import('../../sign/index.js');
      const { mkdir, copyFile } = await import('node:fs/promises');
      const { join } = await import('node:path');
      const k = await loadPublicKey(path);
      const rec = new SignRecords(g.store);
      await mkdir(rec.trustDir, { recursive: true });
      const dest = join(rec.trustDir, `${k.keyid}.pub`);
      await copyFile(path, dest);
      if (g.json) return outJson({ keyid: k.keyid, path: dest });
      out(`trusted ${k.keyid} (${dest})`);
    });

  const convertCmd = program
    .command('convert')
    .description(
      'import an ordinary image from an OCI registry, sign it, and attach the cfsdist image to it in the same registry ' +
        '(the tag keeps naming the ordinary image; clients pull it with cfsdist pull docker://…); re-running for the same image changes nothing',
    )
    .argument('<ref>', 'docker://HOST[:PORT]/REPO[:TAG] (imported as the local REPO:TAG)')
    .requiredOption('--key <key>', 'ed25519 private key (cfsdist key generate)')
    .option('--expires <duration>', 'validity of a new statement, e.g. 30d, 12h (default 30d)')
    .option('--fsverity-key <key>', 'also make the kernel fs-verity builtin signature with this RSA/ECDSA key')
    .option('--fsverity-cert <cert>', 'X.509 certificate of --fsverity-key')
    .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform image (default: this machine)')
    .option('--resign', 'sign a new version even if the current statement already covers this image');
  addTransportOptions(convertCmd, { registry: true });
  convertCmd.action(async (ref: string, opts: { key: string; expires?: string; fsverityKey?: string; fsverityCert?: string; platform?: string; resign?: boolean } & TransportCliOptions, cmd: Command) => {
      const g = globals(cmd);
      checkFsverityPair('convert', opts);
      const { Store } = await import('../../store/store.js');
      const s = await import('../../sign/index.js');
      const { convertImage } = await import('../../registry/convert.js');
      const store = await Store.open(g.store, { create: true });
      const r = await convertImage({
        ref,
        store,
        key: await s.loadPrivateKey(opts.key),
        fsverity: await fsveritySigner('convert', opts),
        expiresIn: opts.expires !== undefined ? s.parseDuration(opts.expires) : undefined,
        platform: opts.platform,
        resign: opts.resign,
        transport: (await import('../../client/transport.js')).transportFromCli(opts),
        onStep: (step, detail) => info(g, `convert: ${step} ${detail}`),
      });
      if (g.json) return outJson(r);
      out(
        `converted ${ref}: ${r.name}:${r.tag} version ${r.version}${r.signed ? '' : ' (already signed: unchanged)'}, image ${r.image}` +
          `${r.manifest ? `, attached to ${r.manifest}` : ''}; ${r.push.objects.sent} objects sent (${r.push.bytes.sent} bytes)`,
      );
    });

  program
    .command('sign')
    .description('sign the image NAME:TAG points at: a DSSE statement (name, tag, digest, objects, expiry, version)')
    .argument('<ref>', 'NAME[:TAG]')
    .requiredOption('--key <key>', 'ed25519 private key (cfsdist key generate)')
    .option('--expires <duration>', 'validity, e.g. 30d, 12h, 3600 (default 30d)')
    .option('--version <n>', 'statement version (default: one more than the highest known for the tag)')
    .option('--fsverity-key <key>', 'also make the kernel fs-verity builtin signature with this RSA/ECDSA key')
    .option('--fsverity-cert <cert>', 'X.509 certificate of --fsverity-key')
    .option('--deltas <n>', 'make metadata deltas from this many earlier images of the name: previous versions of the tag, then other tags (default 3)')
    .action(async (ref: string, opts: { key: string; expires?: string; version?: string; fsverityKey?: string; fsverityCert?: string; deltas?: string }, cmd: Command) => {
      const g = globals(cmd);
      checkFsverityPair('sign', opts);
      let version: number | undefined;
      if (opts.version !== undefined) {
        version = Number(opts.version);
        if (!Number.isSafeInteger(version) || version < 1) throw new UsageError(`sign: --version must be a positive integer, got ${opts.version}`);
      }
      const { parseRef } = await import('../../store/names.js');
      const { Store } = await import('../../store/store.js');
      const s = await import('../../sign/index.js');
      const { name, tag } = parseRef(ref);
      const store = await Store.open(g.store);
      const k = await s.loadPrivateKey(opts.key);
      const fsverity = await fsveritySigner('sign', opts);
      const keep = opts.deltas !== undefined ? Number(opts.deltas) : undefined;
      if (keep !== undefined && (!Number.isInteger(keep) || keep < 0)) throw new UsageError(`--deltas takes a count, got ${JSON.stringify(opts.deltas)}`);
      const r = await s.signImage(store, name, tag, k, {
        deltas: keep,
        expiresIn: opts.expires !== undefined ? s.parseDuration(opts.expires) : undefined,
        version,
        fsverity,
      });
      const deltas = r.deltas;
      if (g.json) return outJson({ ...r.statement, keyid: r.keyid, statementPath: r.statementPath, fsveritySigPath: r.fsveritySigPath ?? null, deltas });
      out(`signed ${name}:${tag} version ${r.statement.version}: image ${r.statement.image}, ${r.statement.objectCount} objects, expires ${s.formatTime(r.statement.expires)}`);
      for (const d of deltas) info(g, `delta from ${d.base.slice(0, 16)}…: ${d.bytes} bytes (full image ${d.imageBytes})`);
      info(g, `statement ${r.statementPath} (key ${r.keyid})`);
      if (r.fsveritySigPath) info(g, `fs-verity builtin signature ${r.fsveritySigPath}`);
    });

  program
    .command('verify')
    .description("verify NAME:TAG's signed statement against trusted keys and the local image")
    .argument('<ref>', 'NAME[:TAG]')
    .option('--trust <pubkey>', 'trusted public key (repeatable; STORE/trust/*.pub are trusted too)', collect, [])
    .action(async (ref: string, opts: { trust: string[] }, cmd: Command) => {
      const g = globals(cmd);
      const { parseRef } = await import('../../store/names.js');
      const { Store } = await import('../../store/store.js');
      const s = await import('../../sign/index.js');
      const { name, tag } = parseRef(ref);
      const store = await Store.open(g.store);
      const trusted = await s.loadTrustedKeys(opts.trust, new s.SignRecords(store.dir).trustDir);
      const r = await s.verifyImage(store, name, tag, trusted);
      if (!r.tagMatches) process.exitCode = 1;
      if (g.json) return outJson({ ok: r.tagMatches, ...r.statement, keyid: r.keyid, tagMatches: r.tagMatches });
      out(`${name}:${tag} version ${r.statement.version}: good signature by ${r.keyid} (${r.keySource}); image ${r.statement.image}, expires ${s.formatTime(r.statement.expires)}`);
      if (!r.tagMatches) out(`warning: the local tag ${name}:${tag} does not point at the signed image`);
    });
}

/** --fsverity-key and --fsverity-cert go together. */
function checkFsverityPair(command: string, opts: { fsverityKey?: string; fsverityCert?: string }): void {
  if (Boolean(opts.fsverityKey) !== Boolean(opts.fsverityCert)) throw new UsageError(`${command}: --fsverity-key and --fsverity-cert go together`);
}

/** The kernel-signature signer of --fsverity-key/--fsverity-cert, if given (checked pair). */
async function fsveritySigner(command: string, opts: { fsverityKey?: string; fsverityCert?: string }): Promise<import('../../sign/index.js').FsveritySigner | undefined> {
  checkFsverityPair(command, opts);
  if (!opts.fsverityKey) return undefined;
  const { loadFsveritySigner } = await import('../../sign/index.js');
  return loadFsveritySigner(opts.fsverityKey, opts.fsverityCert!);
}
