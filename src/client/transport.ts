/**
 * Network settings shared by every client that leaves this machine (the cfsdist server client
 * and the OCI registry client, both over http.ts): whom to trust for TLS, whether to check
 * certificates at all, which proxy a URL goes through, and the credentials a command was given
 * for the one registry it names.
 *
 *  - Trust: Node's bundled roots, plus the system bundle `/etc/ssl/certs/ca-certificates.crt`
 *    when it exists (read once, on the first https connection), plus every `--ca-file`.
 *  - Proxies (curl's rules): `https_proxy`/`HTTPS_PROXY` for https:// URLs, `http_proxy`/
 *    `HTTP_PROXY` for http:// ones (the lowercase name wins; curl ignores uppercase HTTP_PROXY
 *    for CGI reasons, we accept it), `no_proxy`/`NO_PROXY`: a comma or space separated list of
 *    `*`, host names (a name matches itself and its subdomains; a leading dot is ignored),
 *    IP addresses, IPv4 CIDR blocks and `HOST:PORT` entries (that port only). Loopback
 *    destinations are never proxied.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { rootCertificates } from 'node:tls';
import { UsageError } from '../errors.js';
import { TransportError } from './errors.js';

/** User name and password for one registry (the `--creds` of a command). */
export interface Credentials {
  username: string;
  password: string;
}

/** Network options of a command, one type for both clients (see the file comment). */
export interface TransportOptions {
  /** PEM files of CAs trusted beside the bundled and system roots (`--ca-file`). */
  caFiles?: string[];
  /** false: accept any server certificate (`--tls-verify=false`). Default true. */
  tlsVerify?: boolean;
  /** Registries (HOST[:PORT]) reached over plain http (`--insecure-registry`). */
  insecureRegistries?: string[];
  /** Credentials for the registry the command names, and no other (`--creds`). */
  creds?: Credentials;
  /** Where the proxy variables are read (default process.env). */
  env?: Record<string, string | undefined>;
}

/** Path of the Debian/Ubuntu system CA bundle. */
export const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

let systemBundle: string | null | undefined;

/** The system CA bundle's text, or null when there is none (read once). */
export function systemCaBundle(): string | null {
  if (systemBundle === undefined) {
    try {
      systemBundle = existsSync(SYSTEM_CA_BUNDLE) ? readFileSync(SYSTEM_CA_BUNDLE, 'utf8') : null;
    } catch {
      systemBundle = null;
    }
  }
  return systemBundle;
}

const caCache = new Map<string, string[]>();

/** The extra CA file the environment names: CFSDIST_EXTRA_CA_CERTS (bin/cfsdist moves
 * NODE_EXTRA_CA_CERTS there, see its comment), else NODE_EXTRA_CA_CERTS itself — which Node
 * would not apply to our connections, since each passes its own `ca` list. */
export function extraCaFile(env: Record<string, string | undefined> = process.env): { file: string; from: string } | undefined {
  for (const from of ['CFSDIST_EXTRA_CA_CERTS', 'NODE_EXTRA_CA_CERTS']) {
    const file = env[from];
    if (file) return { file, from };
  }
  return undefined;
}

function readPem(file: string, what: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TransportError('BAD_CA', `${what} ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new TransportError('BAD_CA', `${what} ${file}: no PEM certificate in it`);
  return pem;
}

/** The `ca` list for TLS connections: bundled roots, the system bundle, the environment's extra
 * CA file (extraCaFile), then `caFiles`. */
export function trustedCas(caFiles: string[] = []): string[] {
  const extra = extraCaFile();
  const key = [extra?.file ?? '', ...caFiles].join('\0');
  let cas = caCache.get(key);
  if (cas) return cas;
  cas = [...rootCertificates];
  const sys = systemCaBundle();
  if (sys) cas.push(sys);
  if (extra && !(sys && extra.file === SYSTEM_CA_BUNDLE)) cas.push(readPem(extra.file, extra.from));
  for (const f of caFiles) cas.push(readPem(f, '--ca-file'));
  caCache.set(key, cas);
  return cas;
}

/** TLS options of a connection under `t`. */
export function tlsOptionsOf(t: TransportOptions = {}): { ca: string[]; rejectUnauthorized: boolean } {
  return { ca: trustedCas(t.caFiles), rejectUnauthorized: t.tlsVerify !== false };
}

/** True for a loopback host (127.0.0.0/8, ::1, localhost; brackets and case ignored). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** A loopback host or a name under `.localhost` (which resolves to loopback, RFC 6761): never
 * proxied, and a token realm there may be plain http. */
export function isLocalhostName(hostname: string): boolean {
  return isLoopbackHost(hostname) || hostname.toLowerCase().endsWith('.localhost');
}

function ipv4(s: string): number | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (!m) return undefined;
  const p = m.slice(1).map(Number);
  if (p.some((x) => x > 255)) return undefined;
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

/** True when the `no_proxy` list `list` exempts host:port from proxying (see the file comment). */
export function noProxyMatches(list: string, hostname: string, port: number): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase().replace(/\.$/, '');
  for (let e of list.split(/[\s,]+/)) {
    e = e.trim().toLowerCase();
    if (!e) continue;
    if (e === '*') return true;
    let ePort: number | undefined;
    const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(e);
    if (bracket) {
      e = bracket[1]!;
      if (bracket[2]) ePort = Number(bracket[2]);
    } else if (isIP(e) !== 6) {
      const m = /^(.*):(\d+)$/.exec(e);
      if (m) {
        e = m[1]!;
        ePort = Number(m[2]);
      }
    }
    if (ePort !== undefined && ePort !== port) continue;
    const slash = e.indexOf('/');
    if (slash > 0) {
      const net = ipv4(e.slice(0, slash));
      const bits = Number(e.slice(slash + 1));
      const ip = ipv4(host);
      if (net !== undefined && ip !== undefined && bits >= 0 && bits <= 32) {
        const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
        if (((ip & mask) >>> 0) === ((net & mask) >>> 0)) return true;
      }
      continue;
    }
    if (isIP(host) || isIP(e)) {
      if (host === e) return true;
      continue;
    }
    const name = e.replace(/^\*?\./, '');
    if (host === name || host.endsWith(`.${name}`)) return true;
  }
  return false;
}

/** The proxy a request to `url` goes through, or undefined for a direct connection. */
export function proxyFor(url: URL, env: Record<string, string | undefined> = process.env): URL | undefined {
  if (isLocalhostName(url.hostname)) return undefined;
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const noProxy = env.no_proxy ?? env.NO_PROXY;
  if (noProxy && noProxyMatches(noProxy, url.hostname, port)) return undefined;
  const raw = url.protocol === 'https:' ? (env.https_proxy ?? env.HTTPS_PROXY) : (env.http_proxy ?? env.HTTP_PROXY);
  if (!raw) return undefined;
  let p: URL;
  try {
    p = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`);
  } catch {
    throw new TransportError('BAD_PROXY', `proxy ${JSON.stringify(raw)} (for ${url.origin}) is not a URL`);
  }
  if (p.protocol !== 'http:' && p.protocol !== 'https:') throw new TransportError('BAD_PROXY', `proxy ${p.href} (for ${url.origin}): only http:// and https:// proxies are supported`);
  return p;
}

/** `Proxy-Authorization` header for a proxy URL with user info, if any. */
export function proxyAuthorization(proxy: URL): string | undefined {
  if (!proxy.username) return undefined;
  const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return `Basic ${Buffer.from(cred, 'utf8').toString('base64')}`;
}

const CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_UNTRUSTED', 'CERT_REJECTED', 'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED', 'CERT_CHAIN_TOO_LONG', 'INVALID_CA', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** True for an error that means the server's certificate was not accepted. */
export function isCertificateError(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && CERT_CODES.has(code);
}

/** The TransportError TLS_CERT for a certificate `err` of `host` during `what`. */
export function certificateError(what: string, host: string, err: Error): TransportError {
  const code = (err as NodeJS.ErrnoException).code;
  return new TransportError('TLS_CERT', `${what}: the TLS certificate of ${host} was not accepted (${code}: ${err.message}); give the CA that signed it with --ca-file FILE, or skip the check with --tls-verify=false`, { cause: err });
}

/** Parse `--tls-verify true|false` (also 1/0, yes/no). */
export function parseTlsVerify(v: string | boolean | undefined): boolean | undefined {
  if (v === undefined || typeof v === 'boolean') return v;
  const s = v.toLowerCase();
  if (s === 'true' || s === '1' || s === 'yes') return true;
  if (s === 'false' || s === '0' || s === 'no') return false;
  throw new UsageError(`--tls-verify takes true or false, not ${JSON.stringify(v)}`);
}

/** Parse `--creds USER[:PASSWORD]` (as skopeo: no colon means an empty password). */
export function parseCreds(v: string | undefined): Credentials | undefined {
  if (v === undefined) return undefined;
  const i = v.indexOf(':');
  const username = i < 0 ? v : v.slice(0, i);
  if (!username) throw new UsageError('--creds takes USER[:PASSWORD] with a non-empty user name');
  return { username, password: i < 0 ? '' : v.slice(i + 1) };
}

/** The network options every remote-facing command takes, as commander gives them. */
export interface TransportCliOptions {
  caFile?: string[];
  tlsVerify?: string | boolean;
  creds?: string;
  insecureRegistry?: string[];
}

/** TransportOptions from a command's `--ca-file`, `--tls-verify`, `--creds` and
 * `--insecure-registry`. */
export function transportFromCli(o: TransportCliOptions): TransportOptions {
  const t: TransportOptions = {};
  if (o.caFile?.length) {
    for (const f of o.caFile) if (!existsSync(f)) throw new UsageError(`--ca-file ${f}: no such file`);
    t.caFiles = [...o.caFile];
  }
  const verify = parseTlsVerify(o.tlsVerify);
  if (verify !== undefined) t.tlsVerify = verify;
  const creds = parseCreds(o.creds);
  if (creds) t.creds = creds;
  if (o.insecureRegistry?.length) t.insecureRegistries = [...o.insecureRegistry];
  return t;
}

/** True when `t` asks for TLS explicitly (a CA file or a --tls-verify choice): a loopback
 * registry is then reached over https instead of plain http. */
export function wantsTls(t: TransportOptions | undefined): boolean {
  return Boolean(t && (t.caFiles?.length || t.tlsVerify !== undefined));
}
