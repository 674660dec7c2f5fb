/**
 * `cfsdist run` with runc as root, on a real busybox image: docker's Entrypoint/Cmd rules, env,
 * users, workdir, exit status, signals, isolation of concurrent containers, and that nothing is
 * left behind — after a normal exit and after `cfsdist run` itself is SIGKILLed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { CLI, runCli } from './helpers.js';
import { busyboxLayout, importAll, runAndTerminate, runcMissing } from './run-fixtures.js';

const skip = runcMissing();
if (skip) process.stderr.write(`# run-runc: skipped: ${skip}\n`);

let work = '';
let store = '';

before(() => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'cfsdist-run-'));
  store = join(work, 'store');
  importAll(store, busyboxLayout(work));
});
after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** `cfsdist run --no-verity IMAGE …` (this kernel may lack fs-verity; the FUSE test verifies). */
function run(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const i = args.findIndex((a) => a.startsWith('bb:'));
  return runCli(['--store', store, 'run', '--no-verity', ...args.slice(0, i), ...args.slice(i)], env);
}

/** Mounts, loop devices and container directories that mention the store. */
function leftovers(): string[] {
  const out: string[] = [];
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (l.includes(store)) out.push(`mount: ${l}`);
  const loops = spawnSync('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' }).stdout;
  for (const l of loops.split('\n')) if (l.includes(store)) out.push(`loop: ${l}`);
  const cdir = join(store, 'containers');
  if (existsSync(cdir)) for (const d of readdirSync(cdir)) out.push(`dir: ${d}`);
  return out;
}

test('COMMAND, --entrypoint and the image Entrypoint/Cmd combine as docker documents', { skip }, () => {
  // [tag, run arguments, expected stdout or exit status 125 (no command)]
  const table: [string, string[], string | 125][] = [
    ['cmd', [], 'from-cmd\n'], // CMD alone runs
    ['cmd', ['echo', 'given'], 'given\n'], // COMMAND replaces CMD
    ['both', [], 'ep from-cmd\n'], // ENTRYPOINT + CMD as default arguments
    ['both', ['given'], 'ep given\n'], // COMMAND replaces CMD, ENTRYPOINT stays
    ['ep', [], 'ep\n'],
    ['ep', ['a', 'b'], 'ep a b\n'],
    ['both', ['--entrypoint', 'echo'], '\n'], // --entrypoint drops the image CMD too
    ['both', ['--entrypoint', 'echo', 'x'], 'x\n'],
    ['cmd', ['--entrypoint', '', 'echo', 'y'], 'y\n'], // --entrypoint "" clears it
    ['none', ['echo', 'z'], 'z\n'],
    ['none', [], 125], // nothing to run: cfsdist's own error status, as docker
    ['both', ['--entrypoint', ''], 125],
  ];
  for (const [tag, args, want] of table) {
    const opts = args[0] === '--entrypoint' ? args.slice(0, 2) : [];
    const rest = args[0] === '--entrypoint' ? args.slice(2) : args;
    const r = run([...opts, `bb:${tag}`, ...rest]);
    const what = `bb:${tag} ${JSON.stringify(args)}: ${r.stderr}`;
    if (want === 125) {
      assert.equal(r.status, 125, what);
      assert.match(r.stderr, /no command/, what);
      assert.equal(r.stdout, '', what);
    } else {
      assert.equal(r.status, 0, what);
      assert.equal(r.stdout, want, what);
    }
  }
  assert.deepEqual(leftovers(), []);
});

test('config: user by name with supplementary groups, env merged, missing WorkingDir created', { skip }, () => {
  const r = run(['-e', 'FOO=cli', '-e', 'FROMHOST', '-e', 'UNSETHOST', '-e', 'NEW=1', 'bb:full'], { FROMHOST: 'host-value', UNSETHOST: undefined });
  assert.equal(r.status, 0, r.stderr);
  const [id, pwd, ...env] = r.stdout.trim().split('\n');
  // Supplementary groups: those listing alice (docker and podman leave out the primary group).
  assert.equal(id, 'uid=1001(alice) gid=1001(alice) groups=10(wheel),50(staff)');
  assert.equal(pwd, '/home/alice/work');
  assert.ok(env.includes('FOO=cli'), env.join(' '));
  assert.ok(env.includes('BAR=keep'));
  assert.ok(env.includes('FROMHOST=host-value'));
  assert.ok(env.includes('NEW=1'));
  assert.ok(env.includes('PATH=/bin'));
  assert.ok(env.includes('HOME=/home/alice'));
  assert.ok(!env.some((e) => e.startsWith('UNSETHOST')));
  assert.ok(env.some((e) => /^HOSTNAME=[0-9a-f]{12}/.test(e)));
});

test('-u uid:gid and name:group, -w, --name sets the hostname', { skip }, () => {
  let r = run(['-u', '1002:50', 'bb:cmd', 'id']);
  assert.equal(r.status, 0, r.stderr);
  // An explicit group: no supplementary groups.
  assert.equal(r.stdout.trim(), 'uid=1002(bob) gid=50(staff)');
  r = run(['-u', 'alice:bob', 'bb:cmd', 'id']);
  assert.equal(r.stdout.trim(), 'uid=1001(alice) gid=1002(bob)');
  r = run(['-u', '4242', 'bb:cmd', 'id', '-u']);
  assert.equal(r.stdout.trim(), '4242');
  r = run(['-u', 'nobody', 'bb:cmd', 'id']);
  assert.equal(r.status, 125);
  assert.match(r.stderr, /nobody/);
  r = run(['-w', '/new/dir', '--rm', '--name', 'named-one', 'bb:cmd', 'sh', '-c', 'pwd; hostname']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, '/new/dir\nnamed-one\n');
  assert.deepEqual(leftovers(), []);
});

test('exit status passes through; --read-only refuses writes; stdout carries only the container output', { skip }, () => {
  let r = run(['bb:cmd', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
  assert.equal(r.status, 7);
  assert.equal(r.stdout, 'out\n');
  assert.match(r.stderr, /err/);
  r = run(['--read-only', 'bb:cmd', 'touch', '/x']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Read-only/i);
});

test('a relative --store: the container runs and --rm leaves nothing (the mount is found by its absolute path)', { skip }, () => {
  const r = spawnSync(process.execPath, [CLI, '--store', 'store', 'run', '--rm', '--no-verity', 'bb:cmd', 'sh', '-c', 'echo hi > /tmp/x; cat /tmp/x'], { cwd: work, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'hi\n');
  assert.deepEqual(leftovers(), []);
});

test('SIGTERM to cfsdist run reaches the container; everything is removed after', { skip }, async () => {
  const { status, stdout, stderr } = await runAndTerminate(store);
  assert.equal(status, 143, stderr);
  assert.equal(stdout, 'ready\ngot-TERM\n');
  assert.deepEqual(leftovers(), []);
});

test('two containers of one image run concurrently with isolated writes; image and store unchanged', { skip }, async () => {
  const hex = readFileSync(join(store, 'tags', 'bb', ':cmd'), 'utf8').split('\n')[0]!;
  const imageSha = (): string => createHash('sha256').update(readFileSync(join(store, 'images', hex))).digest('hex');
  const digestBefore = imageSha();
  const one = (v: string): Promise<{ status: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const c = spawn(process.execPath, [CLI, '--store', store, 'run', '--no-verity', 'bb:cmd', 'sh', '-c', `echo ${v} > /etc/image-file; echo ${v} > /tmp/new; sleep 0.5; cat /etc/image-file /tmp/new`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d: Buffer) => (stdout += d));
      c.stderr.on('data', (d: Buffer) => (stderr += d));
      c.on('close', (status) => resolve({ status, stdout, stderr }));
    });
  const [a, b] = await Promise.all([one('AAA'), one('BBB')]);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  assert.equal(a.stdout, 'AAA\nAAA\n');
  assert.equal(b.stdout, 'BBB\nBBB\n');
  // A third container sees the image as published.
  const c = run(['bb:cmd', 'sh', '-c', 'cat /etc/image-file; ls /tmp']);
  assert.equal(c.stdout, 'from the image\n');
  const fsck = runCli(['--store', store, 'fsck', '--json']);
  assert.equal(fsck.status, 0, fsck.stdout + fsck.stderr);
  assert.equal(imageSha(), digestBefore);
  const dig = runCli(['digest', join(store, 'images', hex)]);
  assert.equal(dig.stdout.trim().split(/\s/)[0], hex, dig.stderr);
  assert.deepEqual(leftovers(), []);
});

test('SIGKILL of cfsdist run, then gc: the container, its mounts and runtime state are removed', { skip }, async () => {
  const child = spawn(process.execPath, [CLI, '--store', store, 'run', '--no-verity', 'bb:cmd', 'sh', '-c', 'echo ready; exec sleep 60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()));
  const ids = readdirSync(join(store, 'containers'));
  assert.equal(ids.length, 1);
  // While it runs, gc keeps it (and its image) and fsck reports nothing stale.
  const gc0 = runCli(['--store', store, 'gc', '--json']);
  assert.equal(gc0.status, 0, gc0.stderr);
  assert.deepEqual(JSON.parse(gc0.stdout).removedContainers, []);
  assert.equal(readdirSync(join(store, 'containers')).length, 1);
  child.kill('SIGKILL');
  // 'exit', not 'close': the container (still running) holds the other end of its stdout.
  await new Promise((r) => child.on('exit', r));
  assert.notDeepEqual(leftovers(), [], 'the killed run left its mounts');
  const gc = runCli(['--store', store, 'gc', '--json']);
  assert.equal(gc.status, 0, gc.stderr);
  assert.deepEqual(JSON.parse(gc.stdout).removedContainers, ids);
  assert.deepEqual(leftovers(), []);
  // The container's process is gone too.
  const ps = spawnSync('sh', ['-c', 'ps -eo args | grep -c "^sleep 60$" || true'], { encoding: 'utf8' });
  assert.equal(ps.stdout.trim(), '0');
});

test('gc never collects an image a running container uses', { skip }, async () => {
  const imp = runCli(['--store', store, 'import', `oci:${join(work, 'oci')}:cmd`, 'tmp:x']);
  assert.equal(imp.status, 0, imp.stderr);
  const child = spawn(process.execPath, [CLI, '--store', store, 'run', '--no-verity', 'tmp:x', 'sh', '-c', 'echo ready; sleep 1.5; cat /etc/image-file'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      if (stdout.includes('ready')) resolve();
    }),
  );
  const { Store } = await import('../src/store/store.js');
  const s = await Store.open(store);
  const image = (await s.getTag('tmp', 'x'))!;
  await s.deleteTag('tmp', 'x');
  // Untag every other tag of the same image too, so only the container holds it.
  const others = (await s.listTags()).filter((t) => t.image.equals(image));
  for (const t of others) await s.deleteTag(t.name, t.tag);
  const gc = runCli(['--store', store, 'gc', '--grace', '0', '--json']);
  assert.equal(gc.status, 0, gc.stderr);
  assert.ok(await s.hasImage(image), 'gc removed the image of a running container');
  assert.equal(JSON.parse(gc.stdout).containerImages, 1);
  const cfg = JSON.parse(readFileSync(join(store, 'containers', readdirSync(join(store, 'containers'))[0]!, 'container.json'), 'utf8')).config as string;
  assert.ok((await s.readConfig(cfg)).length > 0, 'and its config');
  const status = await new Promise((r) => child.on('close', r));
  assert.equal(status, 0);
  assert.equal(stdout, 'ready\nfrom the image\n');
  // Once it exited, gc may collect the image; put the tags back for the other tests.
  const gc2 = runCli(['--store', store, 'gc', '--grace', '0', '--json']);
  assert.equal(gc2.status, 0, gc2.stderr);
  assert.equal(await s.hasImage(image), false);
  importAll(store, join(work, 'oci'));
});

test('--fuse: the rootfs is a verifying userspace mount under the writable layer', { skip }, () => {
  const r = runCli(['--store', store, 'run', '--fuse', 'bb:cmd', 'sh', '-c', 'cat /etc/image-file; echo w > /w; cat /w']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'from the image\nw\n');
  assert.deepEqual(leftovers(), []);
});

test('a named container is kept after exit, then removed by container rm; the name is unique', { skip }, () => {
  let r = run(['--name', 'keep-me', 'bb:cmd', 'sh', '-c', 'echo data > /kept']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(store, 'containers', 'keep-me', 'upper', 'kept')));
  r = run(['--name', 'keep-me', 'bb:cmd', 'true']);
  assert.equal(r.status, 125);
  assert.match(r.stderr, /exists/);
  const ls = runCli(['--store', store, 'container', 'ls', '--json']);
  assert.match(ls.stdout, /keep-me/);
  r = runCli(['--store', store, 'container', 'rm', 'keep-me']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(leftovers(), []);
});

test('bundle IMAGE DIR: runc runs it as it runs umoci bundles; umount DIR/rootfs removes it', { skip }, () => {
  const dir = join(work, 'bundle');
  let r = runCli(['--store', store, 'bundle', '--no-verity', 'bb:full', dir]);
  assert.equal(r.status, 0, r.stderr);
  const spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.equal(spec.root.path, 'rootfs');
  assert.deepEqual(spec.process.user, { uid: 1001, gid: 1001, additionalGids: [10, 50] });
  const rr = spawnSync('runc', ['--root', join(work, 'runc-root'), 'run', '--bundle', dir, 'bundle-test'], { encoding: 'utf8' });
  assert.equal(rr.status, 0, rr.stderr);
  assert.match(rr.stdout, /^uid=1001\(alice\)/);
  r = runCli(['--store', store, 'umount', join(dir, 'rootfs')]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(leftovers(), []);
});

test('inspect shows the config, platform, manifest and counts', { skip }, () => {
  const r = runCli(['--store', store, 'inspect', 'bb:full', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.config.user, 'alice');
  assert.equal(j.config.workdir, '/home/alice/work');
  assert.deepEqual(j.config.cmd, ['sh', '-c', 'id; pwd; env | sort']);
  assert.equal(j.config.labels['org.example.k'], 'v');
  assert.match(j.config.digest, /^sha256:[0-9a-f]{64}$/);
  assert.match(j.manifest, /^sha256:[0-9a-f]{64}$/);
  assert.equal(j.platform, 'linux/amd64');
  assert.ok(j.entries > 16 && j.objects >= 1);
  const text = runCli(['--store', store, 'inspect', 'bb:full']);
  assert.match(text.stdout, /^user +alice$/m);
});
