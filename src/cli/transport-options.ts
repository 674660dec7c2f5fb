/** The network options of the commands that reach a remote (pull, push, import, convert,
 * mount --remote): one place, so that every command spells and documents them alike. */
import type { Command } from 'commander';

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** Add `--ca-file`, `--tls-verify` and, for commands naming a registry, `--creds` and
 * `--insecure-registry` (parsed with transportFromCli, src/client/transport.ts). */
export function addTransportOptions(cmd: Command, opts: { registry: boolean }): Command {
  cmd
    .option('--ca-file <file>', 'trust the CA certificates (PEM) in this file too, beside the bundled and system roots (repeatable)', collect, [])
    .option('--tls-verify <bool>', 'false: do not check the server certificate (as skopeo); true or false given: a loopback registry is reached over https');
  if (opts.registry) {
    cmd
      .option('--creds <user[:password]>', 'OCI registry: credentials for the registry the reference names (no other host receives them)')
      .option('--insecure-registry <host[:port]>', 'OCI registry: reach this registry over plain http (repeatable; loopback registries are plain http unless --ca-file or --tls-verify is given)', collect, []);
  }
  return cmd;
}
