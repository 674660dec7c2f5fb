/**
 * Registry credentials and the two auth flows of the distribution spec:
 *
 *  - Basic: the registry answers 401 with `WWW-Authenticate: Basic realm=…`; every later request
 *    carries `Authorization: Basic base64(user:password)`.
 *  - Bearer (token): the registry answers 401 with `WWW-Authenticate: Bearer realm=URL,
 *    service=S, scope=repository:REPO:pull,push`; the client asks the realm for a token
 *    (GET URL?service=S&scope=…, with Basic credentials when it has them, anonymously
 *    otherwise), and sends `Authorization: Bearer TOKEN`. Tokens are cached per scope.
 *
 * Credentials belong to one host. Where they come from, first match wins: the `auth` option
 * (`--creds`: the registry the command names); the environment (`CFSDIST_REGISTRY_USER` and
 * `CFSDIST_REGISTRY_PASSWORD`: for the host `CFSDIST_REGISTRY_HOST` names — HOST[:PORT], a
 * HOST without port matching every port — or, when it is unset, for the registry the client
 * was made for); then a Docker-style config file — `$CFSDIST_REGISTRY_AUTH_FILE`, else
 * `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `credHelpers[HOST]` names a
 * helper for that host, else `credsStore` the default helper (both run as
 * `docker-credential-<name> get`, the server on stdin, `{"ServerURL","Username","Secret"}` on
 * stdout; "credentials not found" means none), else the `auths` map keyed by `HOST[:PORT]` (or
 * a URL naming it) holding `{"auth": base64("user:password")}` or `{"username", "password"}`.
 *
 * The client (client.ts) sends a registry's credentials to that registry only: not along a
 * redirect to another origin, and not to a token realm on another host or over plain http
 * outside loopback (such a realm gets the credentials configured for its own host, if any,
 * else an anonymous token request).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { RegistryError } from './errors.js';

/** User name and password for a registry. */
export interface RegistryAuth {
  username: string;
  password: string;
}

/** A parsed WWW-Authenticate challenge. */
export interface Challenge {
  scheme: 'basic' | 'bearer' | string;
  params: Record<string, string>;
}

/** Parse a WWW-Authenticate header value (one challenge; quoted or bare parameters). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!)) !== null) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

/** Default path of the Docker-style auths file. */
export function authFilePath(): string {
  if (process.env.CFSDIST_REGISTRY_AUTH_FILE) return process.env.CFSDIST_REGISTRY_AUTH_FILE;
  if (process.env.DOCKER_CONFIG) return join(process.env.DOCKER_CONFIG, 'config.json');
  return join(homedir(), '.docker', 'config.json');
}

/** Longest a credential helper may run, and most bytes of its output. */
export const HELPER_TIMEOUT_MS = 10_000;
export const HELPER_MAX_OUTPUT = 64 * 1024;

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** HOST[:PORT] of a config key (a URL naming a host, or the host itself). */
function keyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

/** True when CFSDIST_REGISTRY_HOST-style `want` (HOST or HOST:PORT) names `host`. */
function hostNames(want: string, host: string): boolean {
  const w = keyHost(want.trim());
  const h = host.toLowerCase();
  if (w === h) return true;
  return !/:\d+$/.test(w) && h.replace(/:\d+$/, '') === w;
}

/** The environment's credentials for `host`, if they apply to it (see the file comment).
 * `own`: `host` is the registry the client was made for. */
export function envCredentials(host: string, own: boolean, env: Record<string, string | undefined> = process.env): RegistryAuth | undefined {
  const user = env.CFSDIST_REGISTRY_USER;
  const password = env.CFSDIST_REGISTRY_PASSWORD;
  if (!user || password === undefined) return undefined;
  const only = env.CFSDIST_REGISTRY_HOST;
  if (only ? !hostNames(only, host) : !own) return undefined;
  return { username: user, password };
}

/** Run `docker-credential-<helper> get` for `host` (bounded in time and output). */
export function runCredentialHelper(helper: string, host: string): Promise<RegistryAuth | undefined> {
  const prog = `docker-credential-${helper}`;
  if (!/^[A-Za-z0-9._-]+$/.test(helper)) return Promise.reject(new RegistryError('AUTH', `credential helper ${JSON.stringify(helper)} for ${host}: not a helper name`));
  return new Promise((resolve, reject) => {
    const child = execFile(prog, ['get'], { timeout: HELPER_TIMEOUT_MS, maxBuffer: HELPER_MAX_OUTPUT, encoding: 'utf8', killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const said = `${stdout}\n${stderr}`;
      if (err) {
        if (/credentials not found/i.test(said)) return resolve(undefined);
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        const why = e.code === 'ENOENT' ? `${prog} is not on PATH`
          : e.killed ? `${prog} ran longer than ${HELPER_TIMEOUT_MS / 1000} s or wrote more than ${HELPER_MAX_OUTPUT} bytes`
          : `${prog} failed: ${said.trim().slice(0, 300) || e.message}`;
        return reject(new RegistryError('AUTH', `credentials for ${host}: ${why}`, { cause: err }));
      }
      let j: { Username?: unknown; Secret?: unknown };
      try {
        j = JSON.parse(stdout) as typeof j;
      } catch {
        return reject(new RegistryError('AUTH', `credentials for ${host}: ${prog} printed something other than JSON`));
      }
      if (typeof j.Username !== 'string' || typeof j.Secret !== 'string' || !j.Secret) return resolve(undefined);
      resolve({ username: j.Username, password: j.Secret });
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(host);
  });
}

/** Credentials for `host` (HOST[:PORT]) from the environment or the Docker config file (see
 * the file comment), or undefined. `own`: `host` is the registry the client was made for (the
 * environment without CFSDIST_REGISTRY_HOST applies to it only). */
export async function findCredentials(host: string, file = authFilePath(), opts: { own?: boolean } = {}): Promise<RegistryAuth | undefined> {
  const fromEnv = envCredentials(host, opts.own !== false);
  if (fromEnv) return fromEnv;
  let doc: DockerConfig;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as DockerConfig;
  } catch {
    return undefined;
  }
  const h = host.toLowerCase();
  const helper = Object.entries(doc.credHelpers ?? {}).find(([k]) => keyHost(k) === h)?.[1];
  if (helper) return runCredentialHelper(helper, host);
  if (doc.credsStore) {
    const found = await runCredentialHelper(doc.credsStore, host);
    if (found) return found;
  }
  for (const [key, entry] of Object.entries(doc.auths ?? {})) {
    if (keyHost(key) !== h) continue;
    if (entry.username && entry.password !== undefined) return { username: entry.username, password: entry.password };
    if (entry.auth) {
      const s = Buffer.from(entry.auth, 'base64').toString('utf8');
      const i = s.indexOf(':');
      if (i > 0) return { username: s.slice(0, i), password: s.slice(i + 1) };
    }
  }
  return undefined;
}

/** `Basic …` header value. */
export function basicHeader(a: RegistryAuth): string {
  return `Basic ${Buffer.from(`${a.username}:${a.password}`, 'utf8').toString('base64')}`;
}
