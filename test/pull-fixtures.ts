/**
 * Test fixtures for signing, serving and pulling: an image family (v1 and v2 sharing most
 * files) built from real directories into a store, keys, a real `cfsdist serve` child process,
 * and CLI runs. Reusable by the mount and demo work: `makeImageFamily(storeDir)`.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, linkSync, writeFileSync, utimesSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { readDirectory } from '../src/tree/from-directory.js';
import { writeImage } from '../src/erofs/writer.js';
import { readImage } from '../src/erofs/reader.js';
import { factsOfTree } from '../src/sign/image-facts.js';
import type { ObjectRef } from '../src/sign/image-facts.js';
import { loadPrivateKey, writeKeyPair } from '../src/sign/keys.js';
import { signImage } from '../src/sign/sign-image.js';
import type { SignImageOptions } from '../src/sign/sign-image.js';
import { toHex } from '../src/verity/digest.js';
import { REPO } from './helpers.js';

/** The CLI the pull tests run. */
export const PULL_CLI: string = join(REPO, 'bin', 'cfsdist');

/** Deterministic pseudo-random bytes for (seed, i). */
export function bytesFor(seed: string, i: number | string, size: number): Buffer {
  const key = createHash('sha256').update(`${seed}/${i}`).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** Compressible text of about `size` bytes for (seed, i). */
export function textFor(seed: string, i: number, size: number): Buffer {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'config', 'value', 'true', 'false', 'path', '/usr/lib', 'option'];
  const h = createHash('sha256').update(`${seed}/${i}`).digest();
  let s = '';
  let k = 0;
  while (s.length < size) {
    s += `${words[h[k % 32]! % words.length]}=${words[(h[(k + 7) % 32]! + k) % words.length]} # line ${k}\n`;
    k++;
  }
  return Buffer.from(s.slice(0, size));
}

/** One image of a family. */
export interface FamilyMember {
  tag: string;
  /** Image fs-verity digest. */
  image: Buffer;
  /** Objects it needs (sorted by digest). */
  objects: ObjectRef[];
  /** Source directory it was built from. */
  src: string;
  /** Image size in bytes. */
  imageSize: number;
}

/** Two versions of one image in a store. */
export interface ImageFamily {
  storeDir: string;
  name: string;
  v1: FamilyMember;
  v2: FamilyMember;
  /** Temporary directory holding the sources. */
  root: string;
}

/** Shape of a family. */
export interface FamilyOptions {
  name?: string;
  /** Small files (default 240). */
  files?: number;
  /** Sizes of the large files (default 3 MiB and 1.2 MiB: travel alone). */
  large?: number[];
  seed?: string;
}

const FIXED_TIME = new Date('2024-01-02T03:04:05Z');

function fileSize(seed: string, i: number): number {
  const h = createHash('sha256').update(`size/${seed}/${i}`).digest();
  if (i % 31 === 7) return h.readUInt16LE(0) % 60; // inline
  if (i % 29 === 3) return 200 * 1024 + (h.readUInt16LE(0) % 4096);
  return 65 + (h.readUInt32LE(0) % 16000);
}

/** Write the source tree of version `v` (1 or 2) under `dir`. */
function writeSource(dir: string, v: 1 | 2, opts: Required<Omit<FamilyOptions, 'name'>>): void {
  const { files, large, seed } = opts;
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < files; i++) {
    const removedInV2 = i % 47 === 11;
    if (v === 2 && removedInV2) continue;
    const changed = v === 2 && i % 10 === 4;
    const sub = join(dir, `d${Math.floor(i / 40)}`);
    mkdirSync(sub, { recursive: true });
    const size = fileSize(seed, i);
    const content = i % 3 === 0 ? textFor(changed ? `${seed}-v2` : seed, i, size) : bytesFor(changed ? `${seed}-v2` : seed, i, size);
    writeFileSync(join(sub, `f${i}${i % 3 === 0 ? '.txt' : '.bin'}`), content);
  }
  if (v === 2) {
    mkdirSync(join(dir, 'new'), { recursive: true });
    for (let i = 0; i < 12; i++) writeFileSync(join(dir, 'new', `n${i}`), bytesFor(`${seed}-new`, i, 500 + i * 700));
  }
  mkdirSync(join(dir, 'big'), { recursive: true });
  large.forEach((size, k) => writeFileSync(join(dir, 'big', `blob${k}`), bytesFor(v === 2 && k === large.length - 1 ? `${seed}-v2` : seed, `big${k}`, size)));
  // Links: a symlink, a hardlink pair, two files with equal content.
  symlinkSync('../d0/f1.bin', join(dir, 'big', 'link-to-f1'));
  linkSync(join(dir, 'd0', 'f1.bin'), join(dir, 'd0', 'f1-hardlink.bin'));
  writeFileSync(join(dir, 'd0', 'same-a'), bytesFor(seed, 'same', 5000));
  writeFileSync(join(dir, 'd0', 'same-b'), bytesFor(seed, 'same', 5000));
  // Fixed times so that images are reproducible.
  const stack = [dir];
  const all: string[] = [];
  while (stack.length) {
    const d = stack.pop()!;
    all.push(d);
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) stack.push(join(d, e.name));
      else if (!e.isSymbolicLink()) all.push(join(d, e.name));
    }
  }
  for (const p of all.reverse()) utimesSync(p, FIXED_TIME, FIXED_TIME);
}

/** Build a store image from a directory: objects, image, tag. */
export async function addDirectoryImage(store: Store, src: string, name: string, tag: string): Promise<FamilyMember> {
  const tree = await readDirectory(src, { digestStore: store.objects.dir });
  const image = writeImage(tree);
  const facts = factsOfTree(readImage(image), `image of ${src}`);
  const digest = await store.addImage(image, facts.objects.map((o) => o.digest));
  await store.setTag(name, tag, digest);
  return { tag, image: digest, objects: facts.objects, src, imageSize: image.length };
}

/** Create (or reuse) a store at `storeDir` holding NAME:v1 and NAME:v2, where v2 changes about
 * a tenth of v1's files, removes a few, adds a few, and changes one large file. */
export async function makeImageFamily(storeDir: string, opts: FamilyOptions = {}): Promise<ImageFamily> {
  const o = { files: opts.files ?? 240, large: opts.large ?? [3 << 20, 1200 * 1024], seed: opts.seed ?? 'family' };
  const name = opts.name ?? 'test/app';
  const root = await mkdtemp(join(tmpdir(), 'cfsdist-family-'));
  writeSource(join(root, 'v1'), 1, o);
  writeSource(join(root, 'v2'), 2, o);
  const store = await Store.open(storeDir, { create: true });
  const v1 = await addDirectoryImage(store, join(root, 'v1'), name, 'v1');
  const v2 = await addDirectoryImage(store, join(root, 'v2'), name, 'v2');
  return { storeDir, name, v1, v2, root };
}

/** Objects of `b` that `a` lacks. */
export function newObjects(a: FamilyMember, b: FamilyMember): ObjectRef[] {
  const have = new Set(a.objects.map((o) => toHex(o.digest)));
  return b.objects.filter((o) => !have.has(toHex(o.digest)));
}

/** Sum of sizes. */
export function bytesOf(objs: ObjectRef[]): number {
  return objs.reduce((a, o) => a + o.size, 0);
}

/** A fresh ed25519 key pair in `dir`. */
export async function makeKey(dir: string, base = 'key'): Promise<{ key: string; pub: string; keyid: string }> {
  mkdirSync(dir, { recursive: true });
  const r = await writeKeyPair(join(dir, base));
  return { key: r.privatePath, pub: r.publicPath, keyid: r.keyid };
}

/** Sign NAME:TAG in a store with a key file (library call). */
export async function signTag(storeDir: string, name: string, tag: string, keyPath: string, opts: SignImageOptions = {}) {
  const store = await Store.open(storeDir);
  return signImage(store, name, tag, await loadPrivateKey(keyPath), opts);
}

/** Sign `tags` of a family with a new key made in `keysDir`; the public key's path. */
export async function signFamily(fam: ImageFamily, keysDir: string, tags: string[] = ['v1', 'v2']): Promise<string> {
  const k = await makeKey(keysDir);
  for (const tag of tags) await signTag(fam.storeDir, fam.name, tag, k.key);
  return k.pub;
}

/** Result of a CLI run. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI (bounded by `timeoutMs`, default 60 s). */
export function runCli(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [PULL_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env ?? {}) } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A running `cfsdist serve` child. */
export interface ServeProcess {
  url: string;
  port: number;
  proc: ChildProcess;
  /** Current and peak resident set size in KiB (from /proc). */
  memory(): { rssKiB: number; hwmKiB: number };
  stop(): Promise<void>;
  stderr(): string;
}

/** Start `cfsdist serve --listen 127.0.0.1:0 --store DIR …` and wait for its address. */
export function startServe(storeDir: string, args: string[] = []): Promise<ServeProcess> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [PULL_CLI, 'serve', '--listen', '127.0.0.1:0', '--store', storeDir, '--quiet', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`cfsdist serve did not start within 15 s: ${err}`));
    }, 15_000);
    proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    proc.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`cfsdist serve exited with ${code}: ${err}`));
    });
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (http:\/\/127\.0\.0\.1:(\d+))\n/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      const exited = new Promise<void>((r) => proc.once('close', () => r()));
      resolve({
        url: m[1]!,
        port: Number(m[2]),
        proc,
        stderr: () => err,
        memory: () => {
          const s = readFileSync(`/proc/${proc.pid}/status`, 'utf8');
          const num = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
          return { rssKiB: num('VmRSS'), hwmKiB: num('VmHWM') };
        },
        stop: async () => {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
          const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(t);
        },
      });
    });
  });
}

/** What a store holds: object digests, image digests, tags (NAME:TAG → hex), ingest areas. */
export interface StoreSnapshot {
  objects: string[];
  images: string[];
  tags: Record<string, string>;
  /** Image configs (sha256:…) and the config each tag names. */
  configs: string[];
  tagConfigs: Record<string, string>;
}

/** Snapshot the visible content of a store (objects/, images/, tags/, configs/). */
export async function snapshotStore(storeDir: string): Promise<StoreSnapshot> {
  const store = await Store.open(storeDir, { create: true });
  const { objects } = await store.objects.scan();
  const images = (await store.listImages()).map(toHex);
  const tags: Record<string, string> = {};
  const tagConfigs: Record<string, string> = {};
  for (const t of await store.listTags()) {
    tags[`${t.name}:${t.tag}`] = toHex(t.image);
    if (t.meta.config) tagConfigs[`${t.name}:${t.tag}`] = t.meta.config;
  }
  return { objects: objects.map((o) => o.hex).sort(), images, tags, configs: (await store.listConfigs()).sort(), tagConfigs };
}

/** Bytes of every file below a directory, keyed by relative path (for equality checks). */
export function treeFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string, rel: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p, r);
      else if (e.isFile()) out.set(r, readFileSync(p));
    }
  };
  walk(dir, '');
  return out;
}

/** Remove a directory tree (ignores errors). */
export function cleanup(...dirs: string[]): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

/** Size of a file. */
export function sizeOf(path: string): number {
  return statSync(path).size;
}
