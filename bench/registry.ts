/**
 * cfsdist over a real OCI registry vs what a runtime does today, same run, same registry
 * (Debian's docker-registry on 127.0.0.1, htpasswd auth), real Debian image family (v1, v2):
 *
 *  (a) ready to run, cold: `pull` of v1 into an empty store vs `skopeo copy docker://…:v1
 *      oci:DIR:v1` + `umoci unpack` (target ≤ 0.5×); also vs `skopeo copy` alone;
 *  (b) update: `pull` of v2 with v1 present vs `skopeo copy …:v2` into the same layout (v1's
 *      blobs reused) + `umoci unpack` of v2 (target ≤ 0.2×);
 *  (c) bytes on the wire: cold pull vs the ordinary image's compressed layers (≤ 1.0×), update
 *      vs the bytes skopeo moves for it (its new blobs: layer, config, manifest; ≤ 0.5×);
 *  requests per pull.
 * Every figure is a whole process, `cfsdist pull` as for the reference tools. Three rounds,
 * each into fresh directories, alternating reference and cfsdist; the figures are medians. The filesystem is synced before each timed step: a pull ends with a filesystem sync
 * (its durability point), which would otherwise also flush what the step before it wrote.
 * skopeo's bytes are the sizes of the blobs and manifests it fetches (HTTP overhead not
 * counted: in its favour); cfsdist's are socket bytes, headers included.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Store } from '../src/store/store.js';
import { push } from '../src/client/push.js';
import { pull } from '../src/client/pull.js';
import type { PullSummary } from '../src/client/pull.js';
import { loadPublicKey } from '../src/sign/keys.js';
import { RegistryRemote, parseRegistryRef } from '../src/registry/index.js';
import { registryMissing, signedDebian, startRegistry } from '../test/registry-fixtures.js';

import type { BenchRow } from './types.js';
import { median } from './measure.js';
export type { BenchRow };

const SELF = fileURLToPath(import.meta.url);
const CLI = join(dirname(SELF), '..', '..', 'bin', 'cfsdist');
const NAME = 'cfsdist/debian';
/** Rounds of each measurement (medians reported). */
const ROUNDS = 3;


function sh(cmd: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}

/** Run the benchmark (needs root, docker-registry, skopeo, umoci). */
export async function run(): Promise<BenchRow[]> {
  const missing = registryMissing() || (spawnSync('sh', ['-c', 'command -v skopeo && command -v umoci'], { stdio: 'ignore' }).status !== 0 ? 'skopeo/umoci missing' : false);
  if (missing) return [{ name: 'registry benchmark skipped', value: 0, unit: '', note: missing }];
  const dir = mkdtempSync('/var/tmp/cfsdist-bench-registry-');
  const reg = await startRegistry();
  const rows: BenchRow[] = [];
  try {
    const deb = await signedDebian(dir, NAME);
    const auth = { username: reg.user, password: reg.password };
    const remote = () => new RegistryRemote(parseRegistryRef(`docker://${reg.host}/${NAME}`), { auth });
    const server = await Store.open(deb.storeDir);
    for (const tag of ['v1', 'v2']) {
      const r = remote();
      await push({ store: server, target: r, name: NAME, tag });
      r.close();
    }
    const creds = `${reg.user}:${reg.password}`;
    for (const tag of ['v1', 'v2']) sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${deb.layout}:${tag}`, `docker://${reg.host}/library/debian:${tag}`]);
    // Sizes of what skopeo fetches, from the layout's manifests.
    const index = JSON.parse(readFileSync(join(deb.layout, 'index.json'), 'utf8')) as { manifests: { digest: string; size: number; annotations?: Record<string, string> }[] };
    const man = (tag: string) => {
      const d = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)!;
      const j = JSON.parse(readFileSync(join(deb.layout, 'blobs/sha256', d.digest.slice(7)), 'utf8')) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
      return { manifestSize: d.size, ...j };
    };
    const m1 = man('v1');
    const m2 = man('v2');
    const layers1 = m1.layers.reduce((a, l) => a + l.size, 0);
    const have1 = new Set([m1.config.digest, ...m1.layers.map((l) => l.digest)]);
    const skopeoUpdate = m2.manifestSize + [m2.config, ...m2.layers].filter((b) => !have1.has(b.digest)).reduce((a, b) => a + b.size, 0);

    // `cfsdist pull` as a user runs it: a process of its own (start-up included, as for the
    // reference tools); its --json summary gives the wire figures, the wall time is ours.
    const pullTag = (client: string, tag: string): PullSummary => {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, [CLI, 'pull', '--json', '--quiet', '--store', client, '--trust', deb.pub, `docker://${reg.host}/${NAME}:${tag}`], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
        env: { ...process.env, CFSDIST_REGISTRY_USER: reg.user, CFSDIST_REGISTRY_PASSWORD: reg.password },
      });
      const seconds = (performance.now() - t0) / 1000;
      if (r.status !== 0) throw new Error(`cfsdist pull ${tag}: ${r.stderr}`);
      return { ...(JSON.parse(r.stdout) as PullSummary), seconds };
    };
    // The same pull as a library call in a running process (a daemon's view: code already warm).
    const trusted = [await loadPublicKey(deb.pub)];
    const pullInProcess = async (client: Store, tag: string): Promise<number> => {
      const r = remote();
      try {
        return (await pull({ store: client, remote: r, name: NAME, tag, trusted })).seconds;
      } finally {
        r.close();
      }
    };
    // ext4 without a journal skips inodes freed in the last 30 s when it allocates new ones,
    // which makes file creation far slower just after mass deletions (earlier modules, the
    // fixtures): wait that out, so both sides are measured in steady state.
    await new Promise((r) => setTimeout(r, 36_000));
    const src = `docker://${reg.host}/library/debian`;
    const runs = { copy1: [] as number[], unpack1: [] as number[], copy2: [] as number[], unpack2: [] as number[], p1: [] as PullSummary[], p2: [] as PullSummary[], lib1: [] as number[], lib2: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      // Reference: skopeo copy + umoci unpack, v1 then v2 into the same layout; cfsdist: pull
      // v1 into an empty store, then v2 into it.
      const oci = join(dir, `oci-${round}`);
      const client = join(dir, `client-${round}`);
      sh('sync', []);
      runs.copy1.push(sh('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', creds, `${src}:v1`, `oci:${oci}:v1`]));
      runs.unpack1.push(sh('umoci', ['unpack', '--image', `${oci}:v1`, join(dir, `bundle-v1-${round}`)]));
      sh('sync', []);
      runs.p1.push(pullTag(client, 'v1'));
      sh('sync', []);
      runs.copy2.push(sh('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', creds, `${src}:v2`, `oci:${oci}:v2`]));
      runs.unpack2.push(sh('umoci', ['unpack', '--image', `${oci}:v2`, join(dir, `bundle-v2-${round}`)]));
      sh('sync', []);
      runs.p2.push(pullTag(client, 'v2'));
      const lib = await Store.open(join(dir, `lib-${round}`), { create: true });
      sh('sync', []);
      runs.lib1.push(await pullInProcess(lib, 'v1'));
      sh('sync', []);
      runs.lib2.push(await pullInProcess(lib, 'v2'));
    }
    const ref1s = runs.copy1.map((c, i) => c + runs.unpack1[i]!);
    const ref2s = runs.copy2.map((c, i) => c + runs.unpack2[i]!);
    const [copy1, unpack1, copy2, unpack2, ref1, ref2] = [runs.copy1, runs.unpack1, runs.copy2, runs.unpack2, ref1s, ref2s].map(median) as [number, number, number, number, number, number];
    const bySeconds = (a: PullSummary, b: PullSummary) => a.seconds - b.seconds;
    const p1 = [...runs.p1].sort(bySeconds)[Math.floor(ROUNDS / 2)]!;
    const p2 = [...runs.p2].sort(bySeconds)[Math.floor(ROUNDS / 2)]!;
    const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join('/');
    const note1 = `median of ${ROUNDS}; runs ours ${list(runs.p1.map((p) => p.seconds))} reference ${list(ref1s)}`;
    const note2 = `median of ${ROUNDS}; runs ours ${list(runs.p2.map((p) => p.seconds))} reference ${list(ref2s)}`;
    rows.push({ name: 'cold: pull v1 until ready to run', value: p1.seconds, unit: 's', reference: ref1, ratio: p1.seconds / ref1, target: '≤ 0.5× skopeo copy + umoci unpack', note: `skopeo copy ${copy1.toFixed(2)} s + umoci unpack ${unpack1.toFixed(2)} s; ${note1}` });
    rows.push({ name: 'cold: pull v1 vs skopeo copy alone', value: p1.seconds, unit: 's', reference: copy1, ratio: p1.seconds / copy1, note: 'skopeo copy does not unpack' });
    rows.push({ name: 'update: pull v2 with v1 present', value: p2.seconds, unit: 's', reference: ref2, ratio: p2.seconds / ref2, target: '≤ 0.2× skopeo copy + umoci unpack', note: `skopeo copy ${copy2.toFixed(2)} s + umoci unpack ${unpack2.toFixed(2)} s; ${note2}` });
    rows.push({ name: 'update: pull v2 vs skopeo copy alone', value: p2.seconds, unit: 's', reference: copy2, ratio: p2.seconds / copy2 });
    const lib1 = median(runs.lib1);
    const lib2 = median(runs.lib2);
    rows.push({ name: 'cold: pull v1 as a library call in a running process', value: lib1, unit: 's', reference: ref1, ratio: lib1 / ref1, note: `no process start-up, code warm (a daemon); runs ${list(runs.lib1)}` });
    rows.push({ name: 'update: pull v2 as a library call in a running process', value: lib2, unit: 's', reference: ref2, ratio: lib2 / ref2, note: `no process start-up, code warm (a daemon); runs ${list(runs.lib2)}` });
    rows.push({ name: 'cold: bytes received', value: p1.wire.received, unit: 'B', reference: layers1, ratio: p1.wire.received / layers1, target: '≤ 1.0× compressed layers', note: `${p1.objects.fetched} objects, ${p1.bytes.needed} content bytes` });
    rows.push({ name: 'update: bytes received', value: p2.wire.received, unit: 'B', reference: skopeoUpdate, ratio: p2.wire.received / skopeoUpdate, target: '≤ 0.5× skopeo', note: `${p2.objects.fetched} objects (${p2.bytes.fetched} B content) + ${p2.delta ? `${p2.delta.kind === 'zpatch' ? 'binary delta (zpatch)' : 'tree delta'} ${p2.delta.bytes} B` : `image ${p2.bytes.image} B`}` });
    rows.push({ name: 'cold: requests per pull', value: p1.wire.requests, unit: 'requests', note: `${p1.objects.fetched} objects fetched` });
    rows.push({ name: 'update: requests per pull', value: p2.wire.requests, unit: 'requests', note: `${p2.objects.fetched} objects fetched` });
    return rows;
  } finally {
    await reg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === SELF) {
  const rows = await run();
  for (const r of rows) {
    const v = r.unit === 's' ? r.value.toFixed(2) : String(r.value);
    const ref = r.reference === undefined ? '' : ` | reference ${r.unit === 's' ? r.reference.toFixed(2) : r.reference} ${r.unit}`;
    console.log(`${r.name}: ${v} ${r.unit}${ref}${r.ratio === undefined ? '' : ` | ratio ${r.ratio.toFixed(3)}`}${r.target ? ` | target ${r.target}` : ''}${r.note ? ` | ${r.note}` : ''}`);
  }
}
