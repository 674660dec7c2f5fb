/** `cfsdist serve`: the distribution server over the local store (protocol in src/server/protocol.ts). */
import type { Command } from 'commander';
import { globals, info, out } from '../context.js';
import { UsageError } from '../../errors.js';

/** Default listen address of `serve`. */
export const DEFAULT_LISTEN = '127.0.0.1:8780';

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** Split HOST:PORT (IPv6 as [ADDR]:PORT). */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(s);
  if (!m) throw new UsageError(`--listen must be HOST:PORT, not ${JSON.stringify(s)}`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--listen: port ${port} out of range`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** Registers `serve`. */
export function register(program: Command): void {
  program
    .command('serve')
    .description('serve the store over HTTP(S): tags, signed statements, images, objects (read); push (with --token-file)')
    .option('--listen <host:port>', `address to listen on (port 0: any free port; default ${DEFAULT_LISTEN})`)
    .option('--token-file <file>', 'enable push: bearer token clients must present')
    .option('--compress <mode>', 'response compression: auto (zstd if installed, else gzip), zstd, gzip, none', 'auto')
    .option('--trust <pubkey>', 'accept pushed statements only when signed by this key (repeatable)', collect, [])
    .option('--idle-timeout <seconds>', 'close connections idle this long (default 120)')
    .option('--headers-timeout <seconds>', 'a client must send its request headers within this (default 20)')
    .option('--request-timeout <seconds>', 'a client must send its whole request, body included, within this (default 600)')
    .option('--max-connections <n>', 'most connections open at once (default 1024)')
    .option('--max-compressors <n>', 'most zstd processes at once; beyond them responses are gzip (default: CPUs, at least 2)')
    .option('--tls-cert <file>', 'serve HTTPS: certificate chain (PEM)')
    .option('--tls-key <file>', 'serve HTTPS: private key (PEM) of --tls-cert')
    .option('--no-ui', 'do not serve the read-only web page at / (see README "The web page")')
    .option('--insecure', 'allow --token-file on plain HTTP on an address other than loopback (the token travels in clear)')
    .action(async (opts: { listen?: string; tokenFile?: string; compress: string; trust: string[]; idleTimeout?: string; headersTimeout?: string; requestTimeout?: string; maxConnections?: string; maxCompressors?: string; tlsCert?: string; tlsKey?: string; insecure?: boolean; ui: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const { host, port } = parseListen(opts.listen ?? DEFAULT_LISTEN);
      if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new UsageError('--tls-cert and --tls-key go together');
      const loopback = host === 'localhost' || /^127\./.test(host) || host === '::1';
      if (opts.tokenFile && !opts.tlsCert && !loopback && !opts.insecure) {
        throw new UsageError(`--token-file on plain HTTP at ${host}: push tokens would travel in clear; serve HTTPS (--tls-cert, --tls-key), listen on loopback, or pass --insecure`);
      }
      const { Store } = await import('../../store/store.js');
      const { startServer } = await import('../../server/server.js');
      const { parseCompressMode } = await import('../../server/compress.js');
      let token: string | undefined;
      if (opts.tokenFile) {
        const { readFile } = await import('node:fs/promises');
        token = (await readFile(opts.tokenFile, 'utf8')).trim();
        if (!token || /\s/.test(token)) throw new UsageError(`--token-file ${opts.tokenFile}: the token must be one word, not empty`);
      }
      let trusted;
      if (opts.trust.length > 0) {
        const { loadTrustedKeys } = await import('../../sign/keys.js');
        trusted = await loadTrustedKeys(opts.trust);
      }
      const secs = (v: string | undefined, flag: string, dflt: number): number => {
        const n = v !== undefined ? Number(v) : dflt;
        if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number of seconds`);
        return n;
      };
      const idle = secs(opts.idleTimeout, '--idle-timeout', 120);
      const headersTimeout = secs(opts.headersTimeout, '--headers-timeout', 20);
      const requestTimeout = secs(opts.requestTimeout, '--request-timeout', 600);
      const maxConnections = opts.maxConnections !== undefined ? Number(opts.maxConnections) : 1024;
      if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) throw new UsageError('--max-connections must be a positive integer');
      const maxCompressors = opts.maxCompressors !== undefined ? Number(opts.maxCompressors) : undefined;
      if (maxCompressors !== undefined && (!Number.isSafeInteger(maxCompressors) || maxCompressors < 0)) throw new UsageError('--max-compressors must be a whole number');
      let tls: { cert: Buffer; key: Buffer } | undefined;
      if (opts.tlsCert && opts.tlsKey) {
        const { readFile } = await import('node:fs/promises');
        tls = { cert: await readFile(opts.tlsCert), key: await readFile(opts.tlsKey) };
      }
      // Pushed objects are synced once per image (server.ts), not one by one.
      const store = await Store.open(g.store, { create: true, fsync: false });
      const srv = await startServer({
        store,
        host,
        port,
        token,
        compress: parseCompressMode(opts.compress),
        trusted,
        idleTimeoutMs: idle * 1000,
        headersTimeoutMs: headersTimeout * 1000,
        requestTimeoutMs: requestTimeout * 1000,
        maxConnections,
        maxFilterProcesses: maxCompressors,
        tls,
        ui: opts.ui,
        log: g.debug ? (l) => process.stderr.write(l + '\n') : undefined,
      });
      out(`listening on ${srv.url}`);
      info(g, `serving ${store.dir}${token ? ' (push enabled)' : ' (read-only)'}`);
      if (token && !trusted) process.stderr.write('cfsdist serve: warning: started without --trust: pushed statements are stored without checking who signed them (clients still verify them against their own keys)\n');
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await srv.close();
    });
}
