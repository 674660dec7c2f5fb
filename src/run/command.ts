/**
 * From an OCI image config to the process a container runs: argv (docker's ENTRYPOINT/CMD
 * rules), environment, stop signal and working directory.
 */
import { constants } from 'node:os';
import { posix } from 'node:path';
import { RunError } from './errors.js';

/** The parts of an OCI image config (`config` field of the image config JSON) that run uses. */
export interface ImageRunConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  User?: string;
  WorkingDir?: string;
  StopSignal?: string;
  Labels?: Record<string, string> | null;
  ExposedPorts?: Record<string, object> | null;
  Volumes?: Record<string, object> | null;
}

/** The PATH a container gets when neither the image nor `-e` sets one (docker's default). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(field: string, want: string): never {
  throw new RunError('BAD_CONFIG', `image config: ${field} must be ${want}`);
}

/** A string array or null; absent stays absent. */
function stringList(o: Json, key: string): string[] | null | undefined {
  const v = o[key];
  if (v === undefined || v === null) return v;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) bad(`config.${key}`, 'an array of strings');
  return [...(v as string[])];
}

function str(o: Json, key: string, field: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') bad(field, 'a string');
  return v;
}

/** An object whose values all pass `ok`, or null; absent stays absent. */
function objectMap<T>(o: Json, key: string, ok: (v: unknown) => v is T, want: string): Record<string, T> | null | undefined {
  const v = o[key];
  if (v === undefined || v === null) return v;
  if (!isObject(v)) bad(`config.${key}`, `an object of ${want}`);
  const out: Record<string, T> = {};
  for (const [k, x] of Object.entries(v)) {
    if (!ok(x)) bad(`config.${key}[${JSON.stringify(k)}]`, want);
    out[k] = x;
  }
  return out;
}

const isString = (v: unknown): v is string => typeof v === 'string';

/** Parse image config bytes (JSON), returns its `.config` (or {}) validated: arrays of strings etc; throws RunError('BAD_CONFIG', ...) naming the field. */
export function parseImageConfig(bytes: Buffer): { architecture?: string; os?: string; config: ImageRunConfig } {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new RunError('BAD_CONFIG', `image config is not JSON: ${(e as Error).message}`, { cause: e });
  }
  if (!isObject(doc)) bad('the document', 'a JSON object');
  const out: { architecture?: string; os?: string; config: ImageRunConfig } = { config: {} };
  const architecture = str(doc, 'architecture', 'architecture');
  if (architecture !== undefined) out.architecture = architecture;
  const os = str(doc, 'os', 'os');
  if (os !== undefined) out.os = os;
  const c = doc.config;
  if (c === undefined || c === null) return out;
  if (!isObject(c)) bad('config', 'an object');
  const cfg: ImageRunConfig = out.config;
  const ep = stringList(c, 'Entrypoint');
  if (ep !== undefined) cfg.Entrypoint = ep;
  const cmd = stringList(c, 'Cmd');
  if (cmd !== undefined) cfg.Cmd = cmd;
  const env = stringList(c, 'Env');
  if (env !== undefined) cfg.Env = env;
  for (const key of ['User', 'WorkingDir', 'StopSignal'] as const) {
    const v = str(c, key, `config.${key}`);
    if (v !== undefined) cfg[key] = v;
  }
  const labels = objectMap(c, 'Labels', isString, 'strings');
  if (labels !== undefined) cfg.Labels = labels;
  const ports = objectMap(c, 'ExposedPorts', isObject, 'objects');
  if (ports !== undefined) cfg.ExposedPorts = ports;
  const vols = objectMap(c, 'Volumes', isObject, 'objects');
  if (vols !== undefined) cfg.Volumes = vols;
  return out;
}

/**
 * The container's argv, docker/podman semantics: without `--entrypoint` it is the image's
 * Entrypoint followed by COMMAND, or by the image's Cmd when COMMAND is empty. `--entrypoint X`
 * drops both the image's Entrypoint and Cmd (argv = X COMMAND); `--entrypoint ""` drops them
 * too (argv = COMMAND).
 */
export function resolveArgs(cfg: ImageRunConfig, command: string[], entrypoint?: string): string[] {
  let args: string[];
  if (entrypoint === undefined) args = [...(cfg.Entrypoint ?? []), ...(command.length ? command : (cfg.Cmd ?? []))];
  else args = entrypoint === '' ? [...command] : [entrypoint, ...command];
  if (args.length === 0) {
    throw new RunError(
      'NO_COMMAND',
      entrypoint === undefined
        ? 'no command: the image config has no Entrypoint or Cmd; give a COMMAND (cfsdist run IMAGE COMMAND [ARG...]) or --entrypoint'
        : 'no command: --entrypoint "" clears the image Entrypoint and Cmd; give a COMMAND (cfsdist run IMAGE COMMAND [ARG...])',
    );
  }
  return args;
}

/**
 * Merge env: start from the image's Env (KEY=VALUE list, later duplicate keys win; entries
 * without a key are ignored), then apply each `-e` in order: `K=V` sets K; `K` alone takes
 * the host's value from `hostEnv` when set there and is ignored otherwise. PATH defaults to
 * {@link DEFAULT_PATH}. Returns KEY=VALUE strings ordered by first appearance of each key.
 * An `-e` that is empty or starts with '=' is RunError('BAD_ENV').
 */
export function mergeEnv(imageEnv: string[] | null | undefined, overrides: string[], hostEnv: NodeJS.ProcessEnv): string[] {
  const env = new Map<string, string>();
  for (const e of imageEnv ?? []) {
    const eq = e.indexOf('=');
    if (eq > 0) env.set(e.slice(0, eq), e.slice(eq + 1));
  }
  for (const e of overrides) {
    const eq = e.indexOf('=');
    if (e === '' || eq === 0) throw new RunError('BAD_ENV', `invalid environment variable ${JSON.stringify(e)}: want KEY=VALUE or KEY`);
    if (eq > 0) {
      env.set(e.slice(0, eq), e.slice(eq + 1));
    } else {
      const host = hostEnv[e];
      if (host !== undefined) env.set(e, host);
    }
  }
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/**
 * The image's StopSignal as a Node signal name: "SIGTERM", "term", "TERM" and "15" all give
 * 'SIGTERM'; undefined or empty gives 'SIGTERM'. Real-time signals ("SIGRTMIN+3") and names
 * or numbers this platform does not know are RunError('BAD_SIGNAL').
 */
export function parseSignal(s: string | undefined): NodeJS.Signals {
  const t = (s ?? '').trim();
  if (t === '') return 'SIGTERM';
  const table = constants.signals as Record<string, number>;
  if (/^[0-9]+$/.test(t)) {
    const n = Number(t);
    // The first name of a number in os.constants.signals is the canonical one (SIGABRT before SIGIOT).
    const name = Object.keys(table).find((k) => table[k] === n);
    if (name) return name as NodeJS.Signals;
  } else {
    const up = t.toUpperCase();
    const name = up.startsWith('SIG') ? up : `SIG${up}`;
    if (Object.hasOwn(table, name)) return name as NodeJS.Signals;
  }
  throw new RunError('BAD_SIGNAL', `image config: unknown StopSignal ${JSON.stringify(s)}`);
}

/** The working directory: `-w`, else the image's WorkingDir, else '/'. It must be absolute (else RunError('BAD_WORKDIR')); returned normalized, without a trailing '/'. */
export function resolveWorkdir(cfgWorkdir: string | undefined, override: string | undefined): string {
  const given = override ? { dir: override, from: '-w' } : cfgWorkdir ? { dir: cfgWorkdir, from: 'image config WorkingDir' } : undefined;
  if (!given) return '/';
  if (!given.dir.startsWith('/')) throw new RunError('BAD_WORKDIR', `${given.from} ${JSON.stringify(given.dir)} is not an absolute path`);
  const n = posix.normalize(given.dir);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}
