/**
 * Units of `cfsdist run`: argv from ENTRYPOINT/CMD (docker's documented table), environment,
 * stop signal, working directory, user resolution (runc's GetExecUser) and the runtime spec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeEnv, parseImageConfig, parseSignal, resolveArgs, resolveWorkdir, DEFAULT_PATH } from '../src/run/command.js';
import type { ImageRunConfig } from '../src/run/command.js';
import { resolveUser } from '../src/run/user.js';
import type { ExecUser } from '../src/run/user.js';
import { runtimeSpec } from '../src/run/spec.js';
import type { SpecInput } from '../src/run/spec.js';
import { RunError } from '../src/run/errors.js';

const ENTRY = ['exec_entry', 'p1_entry'];
const CMD = ['exec_cmd', 'p1_cmd'];

test('resolveArgs follows docker’s ENTRYPOINT/CMD interaction table', () => {
  const rows: { what: string; cfg: ImageRunConfig; command: string[]; entrypoint?: string; want: string[] }[] = [
    { what: 'no ENTRYPOINT, CMD', cfg: { Cmd: CMD }, command: [], want: CMD },
    { what: 'ENTRYPOINT exec, no CMD', cfg: { Entrypoint: ENTRY }, command: [], want: ENTRY },
    { what: 'ENTRYPOINT exec, CMD exec', cfg: { Entrypoint: ENTRY, Cmd: CMD }, command: [], want: [...ENTRY, ...CMD] },
    { what: 'ENTRYPOINT exec, CMD shell', cfg: { Entrypoint: ENTRY, Cmd: ['/bin/sh', '-c', 'exec_cmd p1_cmd'] }, command: [], want: [...ENTRY, '/bin/sh', '-c', 'exec_cmd p1_cmd'] },
    // Shell-form ENTRYPOINT: CMD is passed on but sh -c ignores it, as the table says.
    { what: 'ENTRYPOINT shell, CMD exec', cfg: { Entrypoint: ['/bin/sh', '-c', 'exec_entry p1_entry'], Cmd: CMD }, command: [], want: ['/bin/sh', '-c', 'exec_entry p1_entry', ...CMD] },
    { what: 'COMMAND overrides CMD', cfg: { Cmd: CMD }, command: ['ls', '-l'], want: ['ls', '-l'] },
    { what: 'COMMAND replaces CMD after ENTRYPOINT', cfg: { Entrypoint: ENTRY, Cmd: CMD }, command: ['x'], want: [...ENTRY, 'x'] },
    { what: 'COMMAND with null Cmd/Entrypoint', cfg: { Entrypoint: null, Cmd: null }, command: ['x'], want: ['x'] },
    { what: '--entrypoint drops ENTRYPOINT and CMD', cfg: { Entrypoint: ENTRY, Cmd: CMD }, command: [], entrypoint: '/bin/bash', want: ['/bin/bash'] },
    { what: '--entrypoint with COMMAND', cfg: { Entrypoint: ENTRY, Cmd: CMD }, command: ['-c', 'id'], entrypoint: '/bin/sh', want: ['/bin/sh', '-c', 'id'] },
    { what: '--entrypoint "" with COMMAND', cfg: { Entrypoint: ENTRY, Cmd: CMD }, command: ['id', '-u'], entrypoint: '', want: ['id', '-u'] },
  ];
  for (const r of rows) assert.deepEqual(resolveArgs(r.cfg, r.command, r.entrypoint), r.want, r.what);
});

test('resolveArgs: nothing to run is NO_COMMAND', () => {
  const no = { name: 'RunError', code: 'NO_COMMAND' };
  assert.throws(() => resolveArgs({}, []), no);
  assert.throws(() => resolveArgs({ Entrypoint: [], Cmd: null }, []), no);
  assert.throws(() => resolveArgs({ Entrypoint: ENTRY, Cmd: CMD }, [], ''), no);
  assert.throws(() => resolveArgs({}, []), (e) => e instanceof RunError && /no Entrypoint or Cmd; give a COMMAND/.test(e.message));
});

test('parseImageConfig returns the validated config and names a bad field', () => {
  const doc = { architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/e'], Cmd: null, Env: ['A=1'], User: 'u', WorkingDir: '/w', StopSignal: 'SIGINT', Labels: { a: 'b' }, ExposedPorts: { '80/tcp': {} }, Ignored: 1 } };
  const got = parseImageConfig(Buffer.from(JSON.stringify(doc)));
  assert.deepEqual(got, { architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/e'], Cmd: null, Env: ['A=1'], User: 'u', WorkingDir: '/w', StopSignal: 'SIGINT', Labels: { a: 'b' }, ExposedPorts: { '80/tcp': {} } } });
  assert.deepEqual(parseImageConfig(Buffer.from('{"os":"linux"}')), { os: 'linux', config: {} });
  const badField = (config: unknown, field: RegExp) =>
    assert.throws(() => parseImageConfig(Buffer.from(JSON.stringify({ config }))), (e) => e instanceof RunError && e.code === 'BAD_CONFIG' && field.test(e.message));
  badField({ Cmd: 'ls' }, /config\.Cmd/);
  badField({ Env: ['A=1', 2] }, /config\.Env/);
  badField({ User: 0 }, /config\.User/);
  badField({ Labels: { a: 1 } }, /config\.Labels/);
  badField({ Volumes: { '/v': true } }, /config\.Volumes/);
  badField([], /config/);
  assert.throws(() => parseImageConfig(Buffer.from('{')), { code: 'BAD_CONFIG' });
  assert.throws(() => parseImageConfig(Buffer.from('[]')), { code: 'BAD_CONFIG' });
});

test('mergeEnv: overrides, host pass-through, dropped unset host var, PATH default, order', () => {
  const host = { HOSTVAR: 'from-host', EMPTY: '' };
  assert.deepEqual(
    mergeEnv(['A=1', 'PATH=/bin', 'B=2', 'A=3'], ['B=x=y', 'C=4', 'HOSTVAR', 'UNSET', 'A=5', 'EMPTY'], host),
    ['A=5', 'PATH=/bin', 'B=x=y', 'C=4', 'HOSTVAR=from-host', 'EMPTY='],
  );
  // An unset host variable leaves the image's value alone.
  assert.deepEqual(mergeEnv(['UNSET=img'], ['UNSET'], {}), ['UNSET=img', `PATH=${DEFAULT_PATH}`]);
  assert.deepEqual(mergeEnv(null, [], {}), ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
  assert.deepEqual(mergeEnv(undefined, ['PATH=/x'], {}), ['PATH=/x']);
  assert.throws(() => mergeEnv([], ['=v'], {}), { name: 'RunError', code: 'BAD_ENV' });
  assert.throws(() => mergeEnv([], [''], {}), { code: 'BAD_ENV' });
});

test('parseSignal gives Node signal names', () => {
  assert.equal(parseSignal(undefined), 'SIGTERM');
  assert.equal(parseSignal(''), 'SIGTERM');
  assert.equal(parseSignal('SIGINT'), 'SIGINT');
  assert.equal(parseSignal('QUIT'), 'SIGQUIT');
  assert.equal(parseSignal('sigusr1'), 'SIGUSR1');
  assert.equal(parseSignal('9'), 'SIGKILL');
  assert.equal(parseSignal('6'), 'SIGABRT');
  for (const s of ['SIGNOPE', 'RTMIN+3', '0', '999', '-1', 'SIG']) assert.throws(() => parseSignal(s), { code: 'BAD_SIGNAL' }, s);
});

test('resolveWorkdir: override, image value, default, relative refused', () => {
  assert.equal(resolveWorkdir(undefined, undefined), '/');
  assert.equal(resolveWorkdir('', undefined), '/');
  assert.equal(resolveWorkdir('/app/./src/', undefined), '/app/src');
  assert.equal(resolveWorkdir('/app', '/tmp/../srv'), '/srv');
  assert.throws(() => resolveWorkdir(undefined, 'rel/dir'), { code: 'BAD_WORKDIR' });
  assert.throws(() => resolveWorkdir('app', undefined), { code: 'BAD_WORKDIR' });
});

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  'broken line',
  'bad:x:notanumber:0::/nope:/bin/sh',
  'alice:x:1000:1000:Alice:/home/alice:/bin/sh',
  'nohome:x:1001:1001:::/bin/sh',
  '',
].join('\n');
const GROUP = [
  'root:x:0:',
  'daemon:x:1:',
  'tty:x:5:alice',
  'junk',
  'wheel:x:10:bob,alice',
  'alice:x:1000:alice',
  'staff:x:50:bob',
  'audio:x:29:alice',
  'video:x:44:',
].join('\n');

test('resolveUser: name with supplementary groups', () => {
  assert.deepEqual(resolveUser('alice', PASSWD, GROUP), { uid: 1000, gid: 1000, additionalGids: [5, 10, 29], home: '/home/alice', name: 'alice' });
  assert.deepEqual(resolveUser('1000', PASSWD, GROUP), { uid: 1000, gid: 1000, additionalGids: [5, 10, 29], home: '/home/alice', name: 'alice' });
});

test('resolveUser: root by default, explicit groups, numeric ids', () => {
  assert.deepEqual(resolveUser('', PASSWD, GROUP), { uid: 0, gid: 0, additionalGids: [], home: '/root', name: 'root' });
  assert.deepEqual(resolveUser('', undefined, undefined), { uid: 0, gid: 0, additionalGids: [], home: '/' });
  assert.deepEqual(resolveUser('1000:44', PASSWD, GROUP), { uid: 1000, gid: 44, additionalGids: [], home: '/home/alice', name: 'alice' });
  assert.deepEqual(resolveUser('2000:3000', PASSWD, GROUP), { uid: 2000, gid: 3000, additionalGids: [], home: '/' });
  assert.deepEqual(resolveUser('alice:staff', PASSWD, GROUP), { uid: 1000, gid: 50, additionalGids: [], home: '/home/alice', name: 'alice' });
  assert.deepEqual(resolveUser('daemon:video', PASSWD, GROUP), { uid: 1, gid: 44, additionalGids: [], home: '/usr/sbin', name: 'daemon' });
  assert.deepEqual(resolveUser('4242:wheel', PASSWD, GROUP), { uid: 4242, gid: 10, additionalGids: [], home: '/' });
  assert.deepEqual(resolveUser('1001', PASSWD, GROUP), { uid: 1001, gid: 1001, additionalGids: [], home: '/', name: 'nohome' });
});

test('resolveUser: unknown numeric uid gets gid 0 and home /', () => {
  assert.deepEqual(resolveUser('12345', PASSWD, GROUP), { uid: 12345, gid: 0, additionalGids: [], home: '/' });
  assert.deepEqual(resolveUser('12345', undefined, undefined), { uid: 12345, gid: 0, additionalGids: [], home: '/' });
});

test('resolveUser: unknown names and out-of-range ids are refused', () => {
  assert.throws(() => resolveUser('mallory', PASSWD, GROUP), (e) => e instanceof RunError && e.code === 'NO_SUCH_USER' && e.message === 'unable to find user mallory: no matching entries in passwd file');
  assert.throws(() => resolveUser('alice', undefined, GROUP), { code: 'NO_SUCH_USER' });
  // A malformed passwd line does not make its name resolvable.
  assert.throws(() => resolveUser('bad', PASSWD, GROUP), { code: 'NO_SUCH_USER' });
  assert.throws(() => resolveUser('alice:nogroup', PASSWD, GROUP), { code: 'NO_SUCH_GROUP' });
  assert.throws(() => resolveUser('alice:junk', PASSWD, GROUP), { code: 'NO_SUCH_GROUP' });
  assert.throws(() => resolveUser('0:staff', PASSWD, undefined), { code: 'NO_SUCH_GROUP' });
  assert.throws(() => resolveUser('2147483648', PASSWD, GROUP), { code: 'BAD_USER' });
  assert.throws(() => resolveUser('0:2147483648', PASSWD, GROUP), { code: 'BAD_USER' });
  assert.equal(resolveUser('2147483647', PASSWD, GROUP).uid, 2147483647);
});

function input(user: ExecUser, more: Partial<SpecInput> = {}): SpecInput {
  return { args: ['/bin/sh'], env: ['PATH=/bin'], cwd: '/', user, hostname: 'box', rootfs: 'rootfs', readonly: false, ...more };
}
const ROOT: ExecUser = { uid: 0, gid: 0, additionalGids: [], home: '/root', name: 'root' };
const ALICE: ExecUser = { uid: 1000, gid: 1000, additionalGids: [5, 10], home: '/home/alice', name: 'alice' };

test('runtimeSpec: root keeps the default capabilities, non-root only bounds them', () => {
  const caps = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_NET_BIND_SERVICE', 'CAP_SETFCAP', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_SETUID', 'CAP_SYS_CHROOT'];
  const r = runtimeSpec(input(ROOT));
  assert.deepEqual(r.process.capabilities, { bounding: caps, effective: caps, permitted: caps });
  assert.deepEqual(r.process.user, { uid: 0, gid: 0 });
  const a = runtimeSpec(input(ALICE));
  assert.deepEqual(a.process.capabilities, { bounding: caps, effective: [], permitted: [] });
  assert.deepEqual(a.process.user, { uid: 1000, gid: 1000, additionalGids: [5, 10] });
  assert.equal(a.process.noNewPrivileges, true);
  assert.deepEqual(a.process.rlimits, [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }]);
});

test('runtimeSpec: namespaces without network, default mounts and masked paths', () => {
  const s = runtimeSpec(input(ROOT));
  assert.equal(s.ociVersion, '1.0.2');
  assert.deepEqual(s.linux.namespaces.map((n) => n.type), ['pid', 'ipc', 'uts', 'mount']);
  assert.ok(!s.linux.namespaces.some((n) => n.type === 'network'));
  assert.deepEqual(s.mounts.map((m) => [m.destination, m.type, m.source]), [
    ['/proc', 'proc', 'proc'], ['/dev', 'tmpfs', 'tmpfs'], ['/dev/pts', 'devpts', 'devpts'], ['/dev/shm', 'tmpfs', 'shm'],
    ['/dev/mqueue', 'mqueue', 'mqueue'], ['/sys', 'sysfs', 'sysfs'], ['/sys/fs/cgroup', 'cgroup', 'cgroup'],
  ]);
  assert.ok(s.mounts.find((m) => m.destination === '/sys')?.options.includes('ro'));
  assert.ok(s.linux.maskedPaths.includes('/proc/kcore') && s.linux.maskedPaths.length === 10);
  assert.deepEqual(s.linux.readonlyPaths, ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']);
  // Specs do not share arrays: changing one leaves the next untouched.
  s.mounts.length = 0;
  s.process.capabilities.bounding.length = 0;
  const t = runtimeSpec(input(ROOT));
  assert.equal(t.mounts.length, 7);
  assert.equal(t.process.capabilities.bounding.length, 11);
});

test('runtimeSpec: HOME/HOSTNAME defaults, process fields, readonly flag, annotations', () => {
  const s = runtimeSpec(input(ALICE, { args: ['id'], cwd: '/work', terminal: true }));
  assert.deepEqual(s.process.env, ['PATH=/bin', 'HOSTNAME=box', 'HOME=/home/alice']);
  assert.deepEqual(s.process.args, ['id']);
  assert.equal(s.process.cwd, '/work');
  assert.equal(s.process.terminal, true);
  assert.equal(s.hostname, 'box');
  assert.deepEqual(s.root, { path: 'rootfs', readonly: false });
  assert.equal('annotations' in s, false);
  const t = runtimeSpec(input(ROOT, { env: ['HOME=/custom', 'HOSTNAME=given'], rootfs: '/abs/rootfs', readonly: true, labels: { 'org.opencontainers.image.title': 't' } }));
  assert.deepEqual(t.process.env, ['HOME=/custom', 'HOSTNAME=given']);
  assert.equal(t.process.terminal, false);
  assert.deepEqual(t.root, { path: '/abs/rootfs', readonly: true });
  assert.deepEqual(t.annotations, { 'org.opencontainers.image.title': 't' });
});
