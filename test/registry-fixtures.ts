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
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running registry. */
export interface RegistryProcess {
  /** 127.0.0.1:PORT */
  host: string;
  /** 'https' when started with `tls`, else 'http'. */
  scheme: 'http' | 'https';
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

/** A test CA and a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost,
 * DNS:registry.test), made with openssl in `dir`. */
export interface TestCa {
  /** CA certificate (PEM file). */
  caCert: string;
  /** Server certificate and key (PEM files). */
  cert: string;
  key: string;
}

/** Make a TestCa in `dir` (EC P-256, valid two days). */
export function makeTestCa(dir: string): TestCa {
  const run = (args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=cfsdist test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  run(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:registry.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext']);
  return { caCert: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
}

function probe(port: number, tls = false): Promise<number> {
  return new Promise((resolve) => {
    const req = (tls ? httpsRequest : request)({ host: '127.0.0.1', port, path: '/v2/', method: 'GET', rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    // A port that accepts and never answers (the registry still starting, or another
    // process) is "not yet", not a hang of the suite.
    req.setTimeout(1000, () => req.destroy());
    req.end();
  });
}

/** Start `docker-registry serve CONFIG` (auth on by default; `tls`: serve https with this
 * certificate and key). */
export async function startRegistry(opts: { auth?: boolean; tls?: { cert: string; key: string } } = {}): Promise<RegistryProcess> {
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
    ...(opts.tls ? ['  tls:', `    certificate: ${opts.tls.cert}`, `    key: ${opts.tls.key}`] : []),
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
    const st = await probe(port, opts.tls !== undefined);
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
    scheme: opts.tls ? 'https' : 'http',
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
