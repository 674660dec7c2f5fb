/** OCI distribution registries as cfsdist remotes and import sources (see artifact.ts for the
 * mapping, client.ts for the protocol, auth.ts for credentials). */
import type { ImageSource } from '../oci/source.js';
import { parseRegistryRef } from './ref.js';
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
export { openRegistryRemote } from './open-remote.js';

/** An ordinary container image in a registry as an import source. */
export function openRegistrySource(ref: string, opts: { platform?: string } = {}): Promise<ImageSource> {
  return openRegistryImage(parseRegistryRef(ref), { platform: opts.platform });
}
