/**
 * The daemon's local protocol: newline-delimited JSON over the unix socket STORE/daemon.sock
 * (mode 0600, so only the store's owner connects). One request per connection:
 *
 *   → {"op":"pull","env":{…},"req":PullRequest}
 *   ← {"event":"progress","p":…} | {"event":"notice","line":…} …  then {"ok":…} or {"error":…}
 *
 *   → {"op":"run","env":{…},"owner":"<pid>-<start>","opts":…}
 *   ← {"event":"log","line":…} …  then {"ok":PreparedRun} or {"error":…}
 *   → {"op":"finish","exitCode":N}      (the client ran the runtime itself, with its own stdio)
 *   ← {"ok":{}}                          a connection closed before `finish`: the daemon removes
 *                                        the container (runtime state, mounts, directory)
 *
 * `env` fingerprints the client's environment variables that change what a pull or a mount
 * does (credentials, proxies, PATH, mount fallbacks): SHA-256 of each value, never the value.
 * A daemon whose own differ answers ENV_MISMATCH and the client does the work itself, so a
 * command gives the same result with or without a daemon.
 */
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';

/** Longest request line the daemon reads (bytes). */
export const MAX_REQUEST_LINE = 1 << 20;
/** Longest answer line a client reads (a dry run's plan lists every object). */
export const MAX_ANSWER_LINE = 256 << 20;

/** The socket of the daemon serving store `dir`. */
export function socketPath(dir: string): string {
  return join(resolve(dir), 'daemon.sock');
}

/** Variables whose values change what a pull or run does. */
const ENV_KEYS = [
  'PATH',
  'HOME',
  'CFSDIST_REGISTRY_USER',
  'CFSDIST_REGISTRY_PASSWORD',
  'CFSDIST_REGISTRY_HOST',
  'CFSDIST_REGISTRY_AUTH_FILE',
  'DOCKER_CONFIG',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'ALL_PROXY',
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'all_proxy',
  'CFSDIST_MOUNT_COMPAT',
  'CFSDIST_RUN_DIR',
  'XDG_RUNTIME_DIR',
  'CFSDIST_FUSE_FETCH_DEADLINE_MS',
  'CFSDIST_EXTRA_CA_CERTS',
  'NODE_EXTRA_CA_CERTS',
];

/** SHA-256 (hex, first 16 bytes) of each relevant variable's value; absent ones are null. */
export function envFingerprint(env: NodeJS.ProcessEnv = process.env): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const k of ENV_KEYS) {
    const v = env[k];
    out[k] = v === undefined ? null : createHash('sha256').update(v).digest('hex').slice(0, 32);
  }
  return out;
}

/** Names of the variables whose fingerprints differ (empty when they all agree). */
export function envDiffers(theirs: unknown, ours: Record<string, string | null>): string[] {
  const t = (theirs && typeof theirs === 'object' ? theirs : {}) as Record<string, unknown>;
  return Object.keys(ours).filter((k) => (t[k] ?? null) !== ours[k]);
}

/** An error as it crosses the socket. */
export interface WireError {
  name: string;
  code?: string;
  message: string;
  exitCode?: number;
}

/** The error's class name, code, message and exit code. */
export function toWireError(e: unknown): WireError {
  const x = e as { name?: unknown; code?: unknown; message?: unknown; exitCode?: unknown };
  return {
    name: typeof x?.name === 'string' ? x.name : 'Error',
    code: typeof x?.code === 'string' ? x.code : undefined,
    message: typeof x?.message === 'string' ? x.message : String(e),
    exitCode: typeof x?.exitCode === 'number' ? x.exitCode : undefined,
  };
}

/**
 * Split a stream into lines of at most `max` bytes: `onLine` gets each complete line;
 * `onTooLong` is called (once) when a line grows past the limit, and nothing more is delivered.
 */
export function lineSplitter(max: number, onLine: (line: string) => void, onTooLong: () => void): (chunk: Buffer) => void {
  let parts: Buffer[] = [];
  let held = 0;
  let dead = false;
  return (chunk: Buffer) => {
    if (dead) return;
    let from = 0;
    for (let nl = chunk.indexOf(10, from); nl >= 0; nl = chunk.indexOf(10, from)) {
      parts.push(chunk.subarray(from, nl));
      held += nl - from;
      if (held > max) {
        dead = true;
        return onTooLong();
      }
      const line = Buffer.concat(parts).toString('utf8');
      parts = [];
      held = 0;
      from = nl + 1;
      onLine(line);
      if (dead) return;
    }
    if (from < chunk.length) {
      parts.push(chunk.subarray(from));
      held += chunk.length - from;
      if (held > max) {
        dead = true;
        onTooLong();
      }
    }
  };
}
