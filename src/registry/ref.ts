/** `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` references. */
import { RegistryError } from './errors.js';
import { isLoopbackHost, wantsTls } from '../client/transport.js';
import type { TransportOptions } from '../client/transport.js';

/** A parsed registry reference. */
export interface RegistryRef {
  /** host[:port] as written. */
  host: string;
  /** Repository path (lowercase components separated by '/'). */
  repo: string;
  /** Tag, if one was given. */
  tag?: string;
  /** Manifest digest (`sha256:…`), if one was given. */
  digest?: string;
  /** http:// or https:// origin used to reach the registry. */
  origin: string;
}

const REPO_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * The scheme a registry is reached with: plain http when `insecure` is set or the transport
 * lists the host among its insecure registries (`--insecure-registry HOST[:PORT]`, or a bare
 * HOST for every port); for a loopback host, plain http unless the transport asks for TLS
 * (`--ca-file` or `--tls-verify` given); https otherwise.
 */
export function registryScheme(host: string, opts: { insecure?: boolean; transport?: TransportOptions } = {}): 'http' | 'https' {
  const h = host.toLowerCase();
  const hostname = new URL(`http://${host}`).hostname;
  const listed = (opts.transport?.insecureRegistries ?? []).some((e) => {
    const x = e.trim().toLowerCase().replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
    return x === h || (!/:\d+$/.test(x) && x === hostname.toLowerCase());
  });
  if (opts.insecure || listed) return 'http';
  if (isLoopbackHost(hostname) && !wantsTls(opts.transport)) return 'http';
  return 'https';
}

/** Parse `docker://HOST[:PORT]/REPO[:TAG|@sha256:…]`; the origin's scheme is registryScheme's. */
export function parseRegistryRef(ref: string, opts: { insecure?: boolean; transport?: TransportOptions } = {}): RegistryRef {
  const m = /^docker:\/\/([^/]+)\/(.+)$/.exec(ref);
  if (!m) throw new RegistryError('BAD_REF', `${JSON.stringify(ref)} is not a registry reference (expected docker://HOST[:PORT]/REPO[:TAG])`);
  const host = m[1]!;
  let rest = m[2]!;
  let digest: string | undefined;
  let tag: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new RegistryError('BAD_REF', `${ref}: invalid digest ${JSON.stringify(digest)}`);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw new RegistryError('BAD_REF', `${ref}: invalid tag ${JSON.stringify(tag)}`);
  }
  if (!REPO_RE.test(rest)) throw new RegistryError('BAD_REF', `${ref}: invalid repository name ${JSON.stringify(rest)} (lowercase letters, digits, separators . _ - and /)`);
  try {
    new URL(`http://${host}`);
  } catch {
    throw new RegistryError('BAD_REF', `${ref}: invalid host ${JSON.stringify(host)}`);
  }
  const scheme = registryScheme(host, opts);
  return { host, repo: rest, tag, digest, origin: `${scheme}://${host}` };
}
