/** Opening a registry repository as a pull source / push target (a module of its own so that
 * `cfsdist pull` does not load the import side: src/oci, registry/source.ts). */
import type { PushTarget } from '../client/remote.js';
import type { RegistryAuth } from './auth.js';
import type { TransportOptions } from '../client/transport.js';
import { parseRegistryRef } from './ref.js';
import { RegistryRemote } from './remote.js';

/** A registry repository as a pull source / push target: `name` is the repository path (what
 * the signed statement must name), `tag` the reference's tag ('latest' when none is given;
 * a push without a tag uses the pushed image's own tag). `transport`: CAs, --tls-verify,
 * proxies, --insecure-registry and --creds for this registry (src/client/transport.ts). */
export function openRegistryRemote(ref: string, opts: { insecure?: boolean; auth?: RegistryAuth; force?: boolean; transport?: TransportOptions } = {}): { remote: PushTarget; name: string; tag: string } {
  const r = parseRegistryRef(ref, { insecure: opts.insecure, transport: opts.transport });
  const remote = new RegistryRemote(r, { auth: opts.auth, force: opts.force, transport: opts.transport });
  return { remote, name: r.repo, tag: r.tag ?? 'latest' };
}
