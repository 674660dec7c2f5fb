/**
 * A real CNCF distribution registry (Debian's `docker-registry`) for tests and benchmarks:
 * started on 127.0.0.1 with a temporary storage directory and htpasswd (bcrypt) auth from a
 * config file written here, stopped after. The bcrypt line comes from `htpasswd -nbB`
 * (apache2-utils) when installed, else from Python's crypt module (glibc/libxcrypt bcrypt).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running registry. */
export interface RegistryProcess {
  /** 127.0.0.1:PORT */
  host: string;
  port: number;
  /** Storage root (docker/registry/v2/… below it). */
  storage: string;
  user: string;
  password: string;
  proc: ChildProcess;
  /** Path of a blob's data file in the storage. */
  blobPath(digest: string): string;
  stop(): Promise<void>;
  stderr(): string;
}

/** Why a registry cannot be started here, or false. */
export function registryMissing(): string | false {
  if (spawnSync('sh', ['-c', 'command -v docker-registry'], { stdio: 'ignore' }).status !== 0) return 'docker-registry is not installed (Debian package docker-registry)';
  if (!bcryptLine('u', 'p')) return 'no bcrypt generator: install apache2-utils (htpasswd) or python3';
  return false;
}

/** A bcrypt htpasswd line for user:password, or undefined. */
export function bcryptLine(user: string, password: string): string | undefined {
  const h = spawnSync('htpasswd', ['-nbB', '-C', '5', user, password], { encoding: 'utf8' });
  if (h.status === 0 && h.stdout.includes(':$2')) return h.stdout.trim();
  const py = spawnSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32)))', password], { encoding: 'utf8' });
  if (py.status === 0 && py.stdout.startsWith('$2')) return `${user}:${py.stdout.trim()}`;
  return undefined;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

function probe(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/v2/', method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Start `docker-registry serve CONFIG` (auth on by default). */
export async function startRegistry(opts: { auth?: boolean } = {}): Promise<RegistryProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-registry-'));
  const storage = join(dir, 'storage');
  const user = 'cfsdist';
  const password = 'registry-pass-1234';
  const port = await freePort();
  const auth = opts.auth !== false;
  if (auth) writeFileSync(join(dir, 'htpasswd'), bcryptLine(user, password)! + '\n');
  const config = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${storage}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: cfsdist-test-secret',
    ...(auth ? ['auth:', '  htpasswd:', '    realm: cfsdist-test', `    path: ${join(dir, 'htpasswd')}`] : []),
    '',
  ].join('\n');
  writeFileSync(join(dir, 'config.yml'), config);
  const proc = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => {
    if (err.length < 100_000) err += c.toString();
  });
  const exited = new Promise<void>((r) => proc.once('close', () => r()));
  const t0 = Date.now();
  for (;;) {
    const st = await probe(port);
    if (st === 200 || st === 401) break;
    if (proc.exitCode !== null || Date.now() - t0 > 15_000) {
      proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`docker-registry did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: `127.0.0.1:${port}`,
    port,
    storage,
    user,
    password,
    proc,
    stderr: () => err,
    blobPath: (digest: string) => {
      const hex = digest.replace(/^sha256:/, '');
      return join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A store holding NAME:v1 and NAME:v2 of the real Debian image family, both signed. */
export interface SignedDebian {
  storeDir: string;
  name: string;
  layout: string;
  key: string;
  pub: string;
  images: { v1: Buffer; v2: Buffer };
}

/** Import the Debian family (src/demo/family.ts) into `dir/server` as NAME:v1/v2 and sign
 * both with a fresh key in `dir/keys`. Needs root (the family's first build). */
export async function signedDebian(dir: string, name: string): Promise<SignedDebian> {
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  const { openSource } = await import('../src/oci/source.js');
  const { importImage } = await import('../src/oci/import.js');
  const { Store } = await import('../src/store/store.js');
  const { makeKey, signTag } = await import('./pull-fixtures.js');
  const fam = await ensureDebianFamily();
  const storeDir = join(dir, 'server');
  const store = await Store.open(storeDir, { create: true });
  const images: Record<string, Buffer> = {};
  for (const t of ['v1', 'v2']) {
    const r = await importImage(await openSource(`oci:${fam.layout}:${t}`), store, { name, tag: t, sync: false });
    images[t] = r.image;
  }
  const k = await makeKey(join(dir, 'keys'));
  await signTag(storeDir, name, 'v1', k.key);
  await signTag(storeDir, name, 'v2', k.key);
  return { storeDir, name, layout: fam.layout, key: k.key, pub: k.pub, images: { v1: images.v1!, v2: images.v2! } };
}
