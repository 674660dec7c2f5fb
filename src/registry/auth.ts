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
 * Where credentials come from, first match wins: the `auth` option; the environment
 * (`CFSDIST_REGISTRY_USER` and `CFSDIST_REGISTRY_PASSWORD`); a Docker-style auths file —
 * `$CFSDIST_REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
 * `~/.docker/config.json` — whose `auths` map is keyed by `HOST[:PORT]` (or a URL naming it)
 * and holds `{"auth": base64("user:password")}` or `{"username", "password"}`.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

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

/** Credentials for `host` (HOST[:PORT]) from the environment or the auths file (see the file
 * comment), or undefined. */
export function findCredentials(host: string, file = authFilePath()): RegistryAuth | undefined {
  const user = process.env.CFSDIST_REGISTRY_USER;
  const password = process.env.CFSDIST_REGISTRY_PASSWORD;
  if (user && password !== undefined) return { username: user, password };
  let doc: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    doc = JSON.parse(readFileSync(file, 'utf8')) as typeof doc;
  } catch {
    return undefined;
  }
  for (const [key, entry] of Object.entries(doc.auths ?? {})) {
    const k = key.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
    if (k !== host) continue;
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
