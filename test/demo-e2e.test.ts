/**
 * The main job end to end: `cfsdist demo` on the real Debian image family. v2's pull must fetch
 * exactly the objects v1 lacks, the numbers must match the client store, and the mounted image
 * must be v2's. An interrupted demo (SIGINT) must leave no server and no mount behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { CLI, notRoot } from './helpers.js';

function skipReason(): string | false {
  const r = notRoot();
  if (r) return r;
  for (const c of ['debootstrap', 'umoci', 'dpkg-deb', 'getfattr']) {
    if (spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0) return `${c} not installed`;
  }
  return false;
}

function cfsdistMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => /cfsdist-demo-/.test(l));
}

test('cfsdist demo: the v2 update moves only the objects v1 lacks and a metadata delta; the summary matches the store', { skip: skipReason(), timeout: 600_000 }, () => {
  const r = spawnSync(process.execPath, [CLI, 'demo', '--json', '--quiet'], { encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout) as {
    objects: Record<string, number>;
    uniqueObjects: number;
    clientObjects: number;
    pulls: { tag: string; objectsNeeded: number; objectsPresent: number; objectsFetched: number; bytesFetched: number; imageBytes: number; viaDelta: boolean }[];
    release: string;
    listing: string;
    program: string;
  };
  const [v1, v2] = s.pulls;
  assert.equal(v1!.tag, 'v1');
  assert.equal(v1!.objectsFetched, s.objects.v1, 'a cold pull fetches every object');
  assert.equal(v2!.objectsNeeded, s.objects.v2);
  assert.equal(v2!.objectsPresent + v2!.objectsFetched, v2!.objectsNeeded);
  assert.ok(v2!.objectsFetched > 0 && v2!.objectsFetched < v2!.objectsNeeded / 10, `v2 fetched ${v2!.objectsFetched} of ${v2!.objectsNeeded}`);
  assert.equal(s.clientObjects, v1!.objectsFetched + v2!.objectsFetched, 'the store holds exactly what was fetched');
  assert.equal(v1!.viaDelta, false);
  assert.ok(v2!.viaDelta, 'the update rebuilt its image from a metadata delta');
  assert.ok(v2!.imageBytes < v1!.imageBytes / 20, `delta ${v2!.imageBytes} B vs image ${v1!.imageBytes} B`);
  assert.equal(s.uniqueObjects, s.clientObjects);
  assert.match(s.release, /image v2/);
  assert.match(s.listing, /\busr\b/);
  // The demo ends by running the image as its config says: entrypoint as user demo, then Cmd.
  assert.match(s.program, /hello from a cfsdist image: cfsdist demo image v2, user demo \(uid 1000 gid 1000 groups 1000 100\), cwd \/home\/demo\/work/);
  assert.match(s.program, /jq-1\.\d/);
  assert.deepEqual(cfsdistMounts(), []);
});

test('cfsdist demo: SIGINT during a pull leaves no server and no mount', { skip: skipReason(), timeout: 600_000 }, async () => {
  const child = spawn(process.execPath, [CLI, 'demo'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not reach the pull: ${lines.join(' | ')}`)), 500_000);
    createInterface({ input: child.stderr! }).on('line', (l) => {
      lines.push(l);
      if (/client: pull demo:latest \(v1\)/.test(l)) {
        clearTimeout(timer);
        child.kill('SIGINT');
        resolve();
      }
    });
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.notEqual(code, 0);
  const servers = spawnSync('pgrep', ['-f', 'cfsdist-demo-.*server-store serve'], { encoding: 'utf8' }).stdout.trim();
  assert.equal(servers, '', `server processes left: ${servers}`);
  assert.deepEqual(cfsdistMounts(), []);
});
