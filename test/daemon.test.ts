/**
 * `cfsdist daemon`: pull and run served by a long-lived process give what the commands give
 * alone — same summary, exit status, stdout, signals, nothing left — and the daemon removes a
 * container at once when its client is SIGKILLed. A client whose environment differs does the
 * work itself; `--no-daemon` skips it; oversized and silent connections are refused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './helpers.js';
import { busyboxLayout, importAll, runAndTerminate, runcMissing } from './run-fixtures.js';
import { makeImageFamily, runCli, signFamily, startServe } from './pull-fixtures.js';
import type { ServeProcess } from './pull-fixtures.js';
import { Store } from '../src/store/store.js';
import { serveDaemon } from '../src/daemon/server.js';
import { socketPath } from '../src/daemon/protocol.js';

const skip = runcMissing();
if (skip) process.stderr.write(`# daemon: runc tests skipped: ${skip}\n`);

let work = '';
let store = '';
let daemon: ChildProcess | undefined;
let daemonLog = '';

async function startDaemon(dir: string, env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
  const d = spawn(process.execPath, [CLI, '--store', dir, 'daemon'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`daemon did not start: ${daemonLog}`)), 20_000);
    d.stderr!.on('data', (c: Buffer) => {
      daemonLog += c.toString();
      if (daemonLog.includes('serving')) {
        clearTimeout(t);
        resolve();
      }
    });
    d.once('close', (c) => reject(new Error(`daemon exited ${c}: ${daemonLog}`)));
  });
  return d;
}

async function stopDaemon(d: ChildProcess | undefined): Promise<void> {
  if (!d || d.exitCode !== null) return;
  d.kill('SIGTERM');
  await new Promise((r) => d.once('close', r));
}

/** The daemon's log since `from`, once it matches `re` (its stderr is read while the test
 * waits; spawnSync clients block that), or as it is after 5 s. */
async function logSince(from: number, re: RegExp): Promise<string> {
  const deadline = Date.now() + 5000;
  while (!re.test(daemonLog.slice(from)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return daemonLog.slice(from);
}

function cli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, '--store', store, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Mounts and container directories of the store. */
function leftovers(): string[] {
  const out: string[] = [];
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (l.includes(store)) out.push(`mount: ${l}`);
  const cdir = join(store, 'containers');
  if (existsSync(cdir)) for (const d of readdirSync(cdir)) out.push(`dir: ${d}`);
  return out;
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'cfsdist-daemon-'));
  store = join(work, 'store');
  if (!skip) importAll(store, busyboxLayout(work));
  else await Store.open(store, { create: true });
  daemon = await startDaemon(store);
});
after(async () => {
  await stopDaemon(daemon);
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the daemon socket is the store owner\'s alone (0600); a second daemon on the store is refused', async () => {
  const st = spawnSync('stat', ['-c', '%a %F', socketPath(store)], { encoding: 'utf8' });
  assert.equal(st.stdout.trim(), '600 socket');
  const second = cli(['daemon']);
  assert.equal(second.status, 1);
  assert.match(second.stderr, /a cfsdist daemon already serves/);
});

test('pull through the daemon: the summary a local pull gives, the daemon did it; --no-daemon and a differing environment pull here', async () => {
  const remote = join(work, 'remote');
  const fam = await makeImageFamily(remote, { seed: 'daemon' });
  const pub = await signFamily(fam, join(work, 'keys'));
  const srv: ServeProcess = await startServe(remote);
  try {
    const before = daemonLog.length;
    const viaDaemon = cli(['pull', '--json', '--trust', pub, `${srv.url}/${fam.name}:v1`]);
    assert.equal(viaDaemon.status, 0, viaDaemon.stderr);
    assert.match(await logSince(before, /pull /), new RegExp(`pull ${srv.url}/${fam.name}:v1`));
    const local = spawnSync(process.execPath, [CLI, '--store', join(work, 'local'), 'pull', '--json', '--trust', pub, `${srv.url}/${fam.name}:v1`], { encoding: 'utf8' });
    assert.equal(local.status, 0, local.stderr);
    const a = JSON.parse(viaDaemon.stdout) as Record<string, unknown>;
    const b = JSON.parse(local.stdout) as Record<string, unknown>;
    for (const k of ['image', 'version', 'keyid', 'objects', 'bytes', 'previous']) assert.deepEqual(a[k], b[k], k);
    // v2 with v1 present: only the new objects, through the daemon.
    const updFrom = daemonLog.length;
    const upd = cli(['pull', '--trust', pub, `${srv.url}/${fam.name}:v2`]);
    assert.equal(upd.status, 0, upd.stderr);
    assert.match(upd.stdout, /pulled .*:v2 version 1/);
    assert.match(await logSince(updFrom, /:v2/), /pull .*:v2/);
    const mark = daemonLog.length;
    assert.equal(cli(['pull', '--no-daemon', '--trust', pub, `${srv.url}/${fam.name}:v1`]).status, 0);
    const other = cli(['pull', '--trust', pub, `${srv.url}/${fam.name}:v2`], { CFSDIST_REGISTRY_USER: 'someone-else' });
    assert.equal(other.status, 0, other.stderr);
    const logged = await logSince(mark, /CFSDIST_REGISTRY_USER differ/);
    assert.doesNotMatch(logged, /pull http/, 'the daemon pulled for --no-daemon or a differing environment');
    assert.match(logged, /CFSDIST_REGISTRY_USER differ/);
    // A daemon that goes away without answering: the client pulls alone and says so.
    const lone = join(work, 'lone');
    await Store.open(lone, { create: true });
    const mute = createServer((sock) => sock.once('data', () => sock.destroy()));
    await new Promise<void>((r) => mute.listen(socketPath(lone), () => r()));
    try {
      // Asynchronous: the mute daemon lives in this process.
      const r = await runCli(['--store', lone, 'pull', '--trust', pub, `${srv.url}/${fam.name}:v1`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /pulled .*:v1/);
      assert.match(r.stderr, /daemon .* went away; pulling in this process/);
    } finally {
      await new Promise((r) => mute.close(r));
    }
    // An error crosses the socket with its message and exit status.
    const bad = cli(['pull', '--trust', pub, `${srv.url}/${fam.name}:nope`]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /nope/);
  } finally {
    await srv.stop();
  }
});

test('run through the daemon: exit status, stdout and stderr, SIGTERM reaching the container, nothing left after', { skip }, async () => {
  const before = daemonLog.length;
  const r = cli(['run', '--no-verity', 'bb:cmd', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
  assert.equal(r.status, 7, r.stderr);
  assert.equal(r.stdout, 'out\n');
  assert.match(r.stderr, /err/);
  assert.match(await logSince(before, /exited 7: removed/), /run bb:cmd: container [0-9a-f]+ for process \d+-\d+/);
  assert.match(daemonLog.slice(before), /exited 7: removed/);
  assert.deepEqual(leftovers(), []);

  const { status, stdout, stderr } = await runAndTerminate(store);
  assert.equal(status, 143, stderr);
  assert.equal(stdout, 'ready\ngot-TERM\n');
  assert.deepEqual(leftovers(), []);
});

test('SIGKILL of a run client: the daemon removes its container at once, no gc needed', { skip }, async () => {
  const child = spawn(process.execPath, [CLI, '--store', store, 'run', '--no-verity', 'bb:cmd', 'sh', '-c', 'echo ready; sleep 60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()));
  assert.notDeepEqual(leftovers(), []);
  const before = daemonLog.length;
  child.kill('SIGKILL');
  const deadline = Date.now() + 15_000;
  while (leftovers().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(leftovers(), []);
  assert.match(await logSince(before, /went away/), /went away: container removed/);
  // The container's process went with it (runc delete --force).
  assert.equal(spawnSync('pgrep', ['-f', 'sleep 60'], { encoding: 'utf8' }).stdout.trim(), '');
});

test('hostile connections: an oversized request line is refused, a silent one is closed, bad JSON answered', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-daemon-lib-'));
  const s = await Store.open(join(dir, 's'), { create: true });
  const d = await serveDaemon(s, { firstLineMs: 300 });
  const talk = (data: Buffer | string): Promise<{ answer: string; ms: number }> =>
    new Promise((resolve) => {
      const t0 = Date.now();
      const c = createConnection(d.socket);
      let answer = '';
      c.on('data', (b: Buffer) => (answer += b.toString()));
      c.on('error', () => undefined);
      c.on('close', () => resolve({ answer, ms: Date.now() - t0 }));
      if (data.length) c.write(data);
    });
  try {
    const big = await talk(Buffer.alloc(2 << 20, 0x61));
    assert.match(big.answer, /longer than 1048576 bytes/);
    const silent = await talk('');
    assert.equal(silent.answer, '');
    assert.ok(silent.ms >= 250 && silent.ms < 5000, `silent connection closed after ${silent.ms} ms`);
    const junk = await talk('{not json\n');
    assert.match(junk.answer, /BAD_REQUEST/);
    const unknown = await talk(JSON.stringify({ op: 'rm -rf', env: {} }) + '\n');
    assert.match(unknown.answer, /unknown operation/);
  } finally {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a daemon killed with SIGKILL leaves its socket: commands then work alone, and a new daemon takes the socket over', async () => {
  daemon!.kill('SIGKILL');
  await new Promise((r) => daemon!.once('close', r));
  assert.ok(existsSync(socketPath(store)), 'the killed daemon left its socket');
  if (!skip) {
    const r = cli(['run', '--no-verity', 'bb:cmd', 'echo', 'alone']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'alone\n');
    assert.deepEqual(leftovers(), []);
  }
  daemon = await startDaemon(store);
  assert.equal(cli(['images']).status, 0);
});
