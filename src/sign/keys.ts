/**
 * Signing keys: ed25519 key pairs from `node:crypto`, stored as PEM — the private key as
 * PKCS#8 (`KEY`, mode 0600), the public key as SPKI (`KEY.pub`). A key is named by its keyid:
 * the lowercase hex SHA-256 of the public key's SPKI DER encoding (the DSSE `keyid`).
 *
 * Trust on a client is a set of public keys: files given with `--trust`, plus every `*.pub` in
 * the store's trust directory (STORE/trust/, see store-layout.ts).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { link, readFile, readdir, writeFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SignError } from './errors.js';

/** A public key with its keyid. */
export interface PublicKeyEntry {
  /** Hex SHA-256 of the SPKI DER. */
  keyid: string;
  key: KeyObject;
  /** Where it came from (file path), for messages. */
  source: string;
}

/** A private signing key with the keyid of its public half. */
export interface PrivateKeyEntry {
  keyid: string;
  key: KeyObject;
  source: string;
}

/** The keyid of a public (or private) key: hex SHA-256 of the public key's SPKI DER. */
export function keyIdOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex');
}

/** A new ed25519 key pair as PEM texts, with its keyid. */
export function generateKeyPair(): { privatePem: string; publicPem: string; keyid: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
    keyid: keyIdOf(publicKey),
  };
}

async function writeNew(path: string, text: string, mode: number, force: boolean): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode, flag: 'wx' });
  try {
    if (force) await rename(tmp, path);
    else {
      // link(2) creates the name only if it is absent: an existing key is never replaced.
      await link(tmp, path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') throw new SignError('KEY_EXISTS', `${path} already exists (use --force to replace it)`);
        throw err;
      });
      await unlink(tmp);
    }
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Generate a key pair and write `path` (private, 0600) and `path.pub` (public). */
export async function writeKeyPair(path: string, opts: { force?: boolean } = {}): Promise<{ keyid: string; privatePath: string; publicPath: string }> {
  const kp = generateKeyPair();
  const force = Boolean(opts.force);
  await writeNew(path, kp.privatePem, 0o600, force);
  await writeNew(path + '.pub', kp.publicPem, 0o644, force);
  return { keyid: kp.keyid, privatePath: path, publicPath: path + '.pub' };
}

/** Read a PEM key file and check it is ed25519; `kind` picks the parser and the messages. */
async function readEd25519(path: string, kind: 'private' | 'public'): Promise<KeyObject> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (err) {
    throw new SignError('KEY_READ', `cannot read key ${path}: ${(err as Error).message}`, { cause: err });
  }
  let key: KeyObject;
  try {
    key = kind === 'private' ? createPrivateKey(text) : createPublicKey(text);
  } catch (err) {
    throw new SignError('KEY_READ', `${path}: not a PEM ${kind} key (${(err as Error).message})`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    const why = kind === 'private' ? 'statements are signed with ed25519 keys (cfsdist key generate)' : 'cfsdist trusts ed25519 keys only';
    throw new SignError('KEY_TYPE', `${path}: an ${key.asymmetricKeyType} key; ${why}`);
  }
  return key;
}

/** Read an ed25519 private key (PEM PKCS#8). */
export async function loadPrivateKey(path: string): Promise<PrivateKeyEntry> {
  const key = await readEd25519(path, 'private');
  return { keyid: keyIdOf(key), key, source: path };
}

/** Read an ed25519 public key (PEM SPKI; a private key file is accepted and its public half used). */
export async function loadPublicKey(path: string): Promise<PublicKeyEntry> {
  const key = await readEd25519(path, 'public');
  return { keyid: keyIdOf(key), key, source: path };
}

/** Public keys from `files` plus every `*.pub` file in `dir` (if it exists), unique by keyid. */
export async function loadTrustedKeys(files: string[], dir?: string): Promise<PublicKeyEntry[]> {
  const paths = [...files];
  if (dir) {
    const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    for (const n of names.sort()) if (n.endsWith('.pub')) paths.push(join(dir, n));
  }
  const out = new Map<string, PublicKeyEntry>();
  for (const p of paths) {
    const k = await loadPublicKey(p);
    if (!out.has(k.keyid)) out.set(k.keyid, k);
  }
  return [...out.values()];
}
