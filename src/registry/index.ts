/** OCI distribution registries as cfsdist remotes and import sources (see artifact.ts for the
 * mapping, client.ts for the protocol, auth.ts for credentials). */
import type { PushTarget } from '../client/remote.js';
import type { ImageSource } from '../oci/source.js';
import type { RegistryAuth } from './auth.js';
import { parseRegistryRef } from './ref.js';
import { RegistryRemote } from './remote.js';
import { openRegistryImage } from './source.js';

export { RegistryClient, repoScope } from './client.js';
export type { Descriptor, RegistryClientOptions } from './client.js';
export { RegistryRemote } from './remote.js';
export type { RegistryRemoteOptions } from './remote.js';
export { parseRegistryRef } from './ref.js';
export type { RegistryRef } from './ref.js';
export { findCredentials, parseChallenge } from './auth.js';
export type { RegistryAuth } from './auth.js';
export { RegistryError } from './errors.js';
export { openRegistryImage } from './source.js';

/** A registry repository as a pull source / push target: `name` is the repository path (what
 * the signed statement must name), `tag` the reference's tag ('latest' when none is given;
 * a push without a tag uses the pushed image's own tag). */
export function openRegistryRemote(ref: string, opts: { insecure?: boolean; auth?: RegistryAuth } = {}): { remote: PushTarget; name: string; tag: string } {
  const r = parseRegistryRef(ref, { insecure: opts.insecure });
  const remote = new RegistryRemote(r, { auth: opts.auth });
  return { remote, name: r.repo, tag: r.tag ?? 'latest' };
}

/** An ordinary container image in a registry as an import source. */
export function openRegistrySource(ref: string, opts: { platform?: string } = {}): Promise<ImageSource> {
  return openRegistryImage(parseRegistryRef(ref), { platform: opts.platform });
}
