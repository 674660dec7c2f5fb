/**
 * The seed's own KPI: time from an empty client store to the first line the container prints,
 * every step a process as a user types it, for the Debian demo family served from a local
 * docker-registry (cfsdist artifacts and the ordinary OCI image side by side):
 *
 *  (a) `cfsdist pull` + `cfsdist run` (the command as users type it: bin/cfsdist, which keeps
 *      NODE_EXTRA_CA_CERTS from Node's start-up — see its comment)
 *  (d) the same two commands with a `cfsdist daemon` serving the client store (started on the
 *      empty store before the round and warmed by one dry-run pull, as a daemon that has been
 *      running is)
 *  (b) `skopeo copy` + `umoci unpack` + `runc run` of umoci's bundle (its `terminal` set to
 *      false, which runc needs without a TTY — see NOTES-tools; counted)
 *  (c) `podman pull` + `podman run` (Debian podman, `--runtime runc --network none`, lowered
 *      ulimits, its own storage per round)
 *
 * cold: v1 into empty stores; update: v2 with v1 present; warm: `cfsdist run` with the image
 * present vs `runc run` on umoci's already-unpacked bundle (with and without the daemon). Rounds alternate the tools; the
 * figures are medians with every run listed. Targets: cold ≤ 0.4× (b), ≤ 0.6× (c); update
 * ≤ 0.15× (b), ≤ 1.0× (c); warm ≤ 1.3×.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Store } from '../src/store/store.js';
import { push } from '../src/client/push.js';
import { RegistryRemote, parseRegistryRef } from '../src/registry/index.js';
import { registryMissing, signedDebian, startRegistry } from '../test/registry-fixtures.js';
import type { BenchRow } from './types.js';
import { median } from './measure.js';
export type { BenchRow };

const SELF = fileURLToPath(import.meta.url);
const CLI = join(dirname(SELF), '..', '..', 'bin', 'cfsdist');
const NAME = 'cfsdist/debian';
const ROUNDS = Number(process.env.CFSDIST_BENCH_ROUNDS ?? 5);

function sh(cmd: string, args: string[], env?: NodeJS.ProcessEnv): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, env: env ?? process.env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr.slice(-800)}`);
}

/** Start a process; resolve when its stdout has a first full line (the time of that), fail if
 * it exits without one or with an error status. */
function untilFirstLine(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ at: number; line: string; done: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let out = '';
    let err = '';
    let got = false;
    const done = new Promise<void>((res, rej) =>
      c.on('close', (code) => {
        if (code === 0) res();
        else rej(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err.slice(-800)}`));
        if (!got) reject(new Error(`${cmd} ${args.join(' ')}: exit ${code} before printing a line: ${err.slice(-800)}`));
      }),
    );
    done.catch(() => undefined);
    c.stderr.on('data', (d: Buffer) => (err += d));
    c.stdout.on('data', (d: Buffer) => {
      out += d;
      const nl = out.indexOf('\n');
      if (!got && nl >= 0) {
        got = true;
        resolve({ at: performance.now(), line: out.slice(0, nl), done });
      }
    });
  });
}

/** Seconds from now until the last step's first line, running `steps` then `last`. */
async function timeToFirstLine(steps: [string, string[]][], last: [string, string[]], env?: NodeJS.ProcessEnv, between?: () => void): Promise<{ seconds: number; line: string }> {
  const t0 = performance.now();
  for (const [c, a] of steps) sh(c, a, env);
  between?.();
  const r = await untilFirstLine(last[0], last[1], env);
  const seconds = (r.at - t0) / 1000;
  await r.done;
  return { seconds, line: r.line };
}

/** `cfsdist daemon` on `store` (created), once it says it serves. */
async function startDaemon(store: string, env: NodeJS.ProcessEnv): Promise<{ stop(): Promise<void> }> {
  const d = spawn(CLI, ['--store', store, 'daemon'], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    d.stderr.on('data', (c: Buffer) => {
      err += c.toString();
      if (err.includes('serving')) resolve();
    });
    d.once('close', (code) => reject(new Error(`cfsdist daemon exited ${code}: ${err.slice(-800)}`)));
  });
  return {
    stop: async () => {
      d.kill('SIGTERM');
      if (d.exitCode === null) await new Promise((r) => d.once('close', r));
    },
  };
}

/** umoci writes `terminal: true`; runc without a TTY needs false. */
function untty(bundle: string): void {
  const p = join(bundle, 'config.json');
  const spec = JSON.parse(readFileSync(p, 'utf8')) as { process: { terminal: boolean } };
  spec.process.terminal = false;
  writeFileSync(p, JSON.stringify(spec));
}

/** Run the benchmark (needs root, docker-registry, skopeo, umoci, runc, podman). */
export async function run(): Promise<BenchRow[]> {
  const tools = ['skopeo', 'umoci', 'runc', 'podman'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
  const missing = registryMissing() || (process.getuid?.() !== 0 ? 'needs root' : false) || (tools.length ? `${tools.join(', ')} missing` : false);
  if (missing) return [{ name: 'run-start benchmark skipped', value: 0, unit: '', note: missing }];
  const dir = mkdtempSync('/var/tmp/cfsdist-bench-run-');
  const reg = await startRegistry();
  const rows: BenchRow[] = [];
  try {
    const deb = await signedDebian(dir, NAME);
    const auth = { username: reg.user, password: reg.password };
    const server = await Store.open(deb.storeDir);
    for (const tag of ['v1', 'v2']) {
      const r = new RegistryRemote(parseRegistryRef(`docker://${reg.host}/${NAME}`), { auth });
      await push({ store: server, target: r, name: NAME, tag });
      r.close();
    }
    const creds = `${reg.user}:${reg.password}`;
    for (const tag of ['v1', 'v2']) sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${deb.layout}:${tag}`, `docker://${reg.host}/library/debian:${tag}`]);
    const env = { ...process.env, CFSDIST_REGISTRY_USER: reg.user, CFSDIST_REGISTRY_PASSWORD: reg.password };
    // Without fs-verity here the kernel mount needs --no-verity (contents verified at pull).
    const probeStore = await Store.open(join(dir, 'probe'), { create: true });
    const verity = await probeStore.objects.verity.probe();
    const noVerity = verity ? [] : ['--no-verity'];
    const src = `docker://${reg.host}/library/debian`;
    const podman = (root: string): string[] => ['--root', join(root, 'root'), '--runroot', join(root, 'run'), '--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
    const podmanRun = ['run', '--rm', '--runtime', 'runc', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];
    const t = { a1: [] as number[], b1: [] as number[], c1: [] as number[], d1: [] as number[], a2: [] as number[], b2: [] as number[], c2: [] as number[], d2: [] as number[], aw: [] as number[], bw: [] as number[], dw: [] as number[] };
    const lines = new Set<string>();
    // ext4 without a journal skips recently freed inodes for 30 s (see bench/registry.ts).
    await new Promise((r) => setTimeout(r, 36_000));
    for (let round = 0; round < ROUNDS; round++) {
      const c = join(dir, `client-${round}`);
      const oci = join(dir, `oci-${round}`);
      const pm = join(dir, `podman-${round}`);
      const b1 = join(dir, `bundle-v1-${round}`);
      const b2 = join(dir, `bundle-v2-${round}`);
      const cd = join(dir, `client-daemon-${round}`);
      const cfsPull = (tag: string, store = c): [string, string[]] => [CLI, ['pull', '--quiet', '--store', store, '--trust', deb.pub, `docker://${reg.host}/${NAME}:${tag}`]];
      const cfsRun = (tag: string, store = c): [string, string[]] => [CLI, ['--store', store, 'run', '--rm', ...noVerity, `${NAME}:${tag}`]];
      const daemon = await startDaemon(cd, env);
      sh(CLI, ['pull', '--dry-run', '--quiet', '--store', cd, '--trust', deb.pub, `docker://${reg.host}/${NAME}:v1`], env);
      const order = round % 2 === 0 ? ['a', 'd', 'b', 'c'] : ['c', 'b', 'd', 'a'];
      for (const phase of ['1', '2'] as const) {
        const tag = phase === '1' ? 'v1' : 'v2';
        const bundle = phase === '1' ? b1 : b2;
        for (const who of order) {
          sh('sync', []);
          let r: { seconds: number; line: string };
          if (who === 'a') r = await timeToFirstLine([cfsPull(tag)], cfsRun(tag), env);
          else if (who === 'd') r = await timeToFirstLine([cfsPull(tag, cd)], cfsRun(tag, cd), env);
          else if (who === 'b') {
            r = await timeToFirstLine(
              [
                ['skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', creds, `${src}:${tag}`, `oci:${oci}:${tag}`]],
                ['umoci', ['unpack', '--image', `${oci}:${tag}`, bundle]],
              ],
              ['runc', ['--root', join(dir, 'runc-state'), 'run', '--bundle', bundle, `bench-${round}-${tag}`]],
              env,
              () => untty(bundle),
            );
          } else {
            r = await timeToFirstLine(
              [['podman', [...podman(pm), 'pull', '-q', '--tls-verify=false', '--creds', creds, `${reg.host}/library/debian:${tag}`]]],
              ['podman', [...podman(pm), ...podmanRun, `${reg.host}/library/debian:${tag}`]],
            );
          }
          lines.add(r.line.replace(/v[12],/, 'vN,'));
          t[`${who}${phase}` as keyof typeof t].push(r.seconds);
        }
      }
      // Warm: everything present.
      for (const who of order.filter((w) => w !== 'c')) {
        sh('sync', []);
        const r =
          who === 'a' || who === 'd'
            ? await timeToFirstLine([], cfsRun('v2', who === 'd' ? cd : c), env)
            : await timeToFirstLine([], ['runc', ['--root', join(dir, 'runc-state'), 'run', '--bundle', b2, `bench-warm-${round}`]]);
        t[`${who}w` as keyof typeof t].push(r.seconds);
      }
      await daemon.stop();
      sh('podman', [...podman(pm), 'system', 'reset', '--force']);
      rmSync(pm, { recursive: true, force: true });
    }
    if (lines.size !== 1) throw new Error(`the three ways printed different first lines: ${[...lines].join(' | ')}`);
    const m = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, median(v)])) as Record<keyof typeof t, number>;
    const list = (xs: number[]): string => xs.map((x) => x.toFixed(3)).join('/');
    const spread = (k: keyof typeof t, r: keyof typeof t): string => `median of ${ROUNDS}; ours ${list(t[k])}; reference ${list(t[r])}`;
    const row = (name: string, k: keyof typeof t, r: keyof typeof t, target: string, note = ''): BenchRow => ({ name, value: m[k], unit: 's', reference: m[r], ratio: m[k] / m[r], target, note: `${note}${spread(k, r)}` });
    rows.push(row('cold: empty store → first line, vs skopeo + umoci + runc', 'a1', 'b1', '≤ 0.4×'));
    rows.push(row('cold: empty store → first line, vs podman pull + run', 'a1', 'c1', '≤ 0.6×'));
    rows.push(row('update: v2 with v1 present → first line, vs skopeo + umoci + runc', 'a2', 'b2', '≤ 0.15×'));
    rows.push(row('update: v2 with v1 present → first line, vs podman pull + run', 'a2', 'c2', '≤ 1.0×'));
    rows.push(row('warm: cfsdist run vs runc run of the unpacked bundle', 'aw', 'bw', '≤ 1.3×', `${verity ? 'verity=require' : 'no fs-verity here: --no-verity'}; `));
    rows.push(row('with cfsdist daemon — cold: empty store → first line, vs skopeo + umoci + runc', 'd1', 'b1', '≤ 0.4×'));
    rows.push(row('with cfsdist daemon — cold: empty store → first line, vs podman pull + run', 'd1', 'c1', '≤ 0.6×'));
    rows.push(row('with cfsdist daemon — update: v2 with v1 present → first line, vs skopeo + umoci + runc', 'd2', 'b2', '≤ 0.15×'));
    rows.push(row('with cfsdist daemon — update: v2 with v1 present → first line, vs podman pull + run', 'd2', 'c2', '≤ 1.0×'));
    rows.push(row('with cfsdist daemon — warm: cfsdist run vs runc run of the unpacked bundle', 'dw', 'bw', '≤ 1.3×'));
    rows.push({ name: 'first line printed', value: 0, unit: '', note: [...lines][0] });
    return rows;
  } finally {
    await reg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === SELF) {
  const rows = await run();
  for (const r of rows) {
    const v = r.unit === 's' ? r.value.toFixed(3) : String(r.value);
    const ref = r.reference === undefined ? '' : ` | reference ${r.reference.toFixed(3)} s`;
    console.log(`${r.name}: ${v} ${r.unit}${ref}${r.ratio === undefined ? '' : ` | ratio ${r.ratio.toFixed(3)}`}${r.target ? ` | target ${r.target}` : ''}${r.note ? ` | ${r.note}` : ''}`);
  }
}
