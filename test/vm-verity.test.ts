/**
 * The security model on a real kernel: Debian's stock 6.12 cloud kernel (fs-verity and builtin
 * signatures built in) booted under qemu, cfsdist itself running test/vm/scenario.sh inside —
 * pull into a verity store, `verity=require` mounts, tampered objects, FUSE agreeing with the
 * kernel, `run`, and the kernel's checks of fs-verity builtin signatures. One boot runs every
 * scenario; each scenario is a test here asserting on the console lines it printed.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, linkSync, chmodSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { REPO, runCli } from './helpers.js';
import { busyboxLayout, runcMissing } from './run-fixtures.js';
import { KERNEL_PACKAGE, bootVm, buildRootTree, ensureInitramfs, ensureKernel, makeExt4, vmMissing } from './vm/vm.js';

const MISSING = vmMissing() || runcMissing();
if (MISSING) {
  const why = `VM tests skipped: ${MISSING}`;
  console.log(`# ${why}`);
  if (process.env.CI === 'true') test('the VM tests can run here', () => assert.fail(why));
}

/** Deterministic bytes. */
function bytes(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < n; off += 32) {
    block.copy(out, off);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** The files of vm/app:v1 (sizes around the inline limit and block sizes, links, nesting). */
function appTree(root: string): void {
  const sizes: [string, number][] = [['empty', 0], ['one', 1], ['small.txt', 100], ['b4095', 4095], ['b4096', 4096], ['b4097', 4097], ['k64', 65536], ['m1', (1 << 20) + 1], ['big.bin', 3 << 20]];
  mkdirSync(join(root, 'usr', 'share', 'deep', 'er'), { recursive: true });
  mkdirSync(join(root, 'etc'));
  for (const [name, n] of sizes) writeFileSync(join(root, 'usr', 'share', name), bytes(name, n));
  for (const [name, n] of sizes) writeFileSync(join(root, name), bytes(`top-${name}`, n));
  writeFileSync(join(root, 'usr', 'share', 'deep', 'er', 'note'), 'deep\n');
  writeFileSync(join(root, 'etc', 'os-release'), 'ID=cfsdist-vm\n');
  chmodSync(join(root, 'etc', 'os-release'), 0o600);
  symlinkSync('../usr/share/small.txt', join(root, 'etc', 'link'));
  symlinkSync('/nowhere', join(root, 'dangling'));
  linkSync(join(root, 'usr', 'share', 'k64'), join(root, 'usr', 'share', 'k64-hardlink'));
}

function cli(args: string[]): string {
  const r = runCli(args);
  if (r.status !== 0) throw new Error(`cfsdist ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function makeCert(dir: string, name: string): { key: string; cert: string; der: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const der = join(dir, `${name}.der`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=cfsdist vm ${name}`], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-in', cert, '-outform', 'DER', '-out', der]);
  return { key, cert, der };
}

/** Scenario lines: "VM <name> k=v …" → name → fields. */
type Lines = Map<string, Record<string, string>[]>;
let lines: Lines = new Map();
/** Set when the kernel package cannot be fetched (known only once `before` ran). */
let unavailable: string | undefined;
let consoleText = '';
let bootSeconds = 0;

function parse(text: string): Lines {
  const out: Lines = new Map();
  for (const line of text.split('\n')) {
    const m = /^VM ([\w-]+)(?: (.*))?$/.exec(line);
    if (!m) continue;
    const fields: Record<string, string> = {};
    const rest = m[2] ?? '';
    const j = rest.indexOf('json=');
    const head = j >= 0 ? rest.slice(0, j) : rest;
    for (const kv of head.split(' ').filter(Boolean)) {
      const e = kv.indexOf('=');
      if (e > 0) fields[kv.slice(0, e)] = kv.slice(e + 1);
    }
    if (j >= 0) fields.json = rest.slice(j + 5);
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), fields]);
  }
  return out;
}

function one(name: string): Record<string, string> {
  const l = lines.get(name);
  assert.ok(l && l.length > 0, `the VM printed no "VM ${name}" line; console:\n${consoleText.slice(-6000)}`);
  return l[0]!;
}

function json(name: string): Record<string, unknown> {
  const f = one(name);
  try {
    return JSON.parse(f.json ?? '') as Record<string, unknown>;
  } catch {
    throw new Error(`VM ${name}: no JSON (${JSON.stringify(f)}); console:\n${consoleText.slice(-4000)}`);
  }
}

/** Console lines of one step, for the closing note and failures. */
function pasteOf(name: string): string {
  const all = consoleText.split('\n');
  const i = all.findIndex((l) => l.startsWith(`VM ${name}`));
  if (i < 0) return '';
  const outLines = [all[i]!];
  for (let k = i + 1; k < all.length && all[k]!.startsWith('VM| '); k++) outLines.push(all[k]!);
  return outLines.join('\n');
}

const work = MISSING ? '' : mkdtempSync(join(tmpdir(), 'cfsdist-vm-'));

before(async () => {
  if (MISSING) return;
  const inputs = join(work, 'in');
  const tree = join(inputs, 'tree');
  mkdirSync(join(inputs, 'keys'), { recursive: true });
  appTree(tree);
  writeFileSync(join(inputs, 'tamper.bin'), bytes('tampered', 3 << 20));
  // The source store, signed as a publisher does.
  const src = join(inputs, 'src');
  cli(['key', 'generate', '--out', join(work, 'stmt')]);
  copyFileSync(join(work, 'stmt.pub'), join(inputs, 'keys', 'stmt.pub'));
  const good = makeCert(work, 'good');
  const bad = makeCert(work, 'untrusted');
  copyFileSync(good.der, join(inputs, 'keys', 'fsv.der'));
  cli(['--store', src, 'import', `dir:${tree}`, 'vm/app:v1']);
  const other = join(work, 'other');
  mkdirSync(other);
  writeFileSync(join(other, 'file'), bytes('other', 10000));
  cli(['--store', src, 'import', `dir:${other}`, 'vm/badsig:v1']);
  const layout = busyboxLayout(join(work, 'bb'));
  cli(['--store', src, 'import', `oci:${layout}:cmd`, 'vm/run:v1']);
  for (const [ref, c] of [['vm/app:v1', good], ['vm/run:v1', good], ['vm/badsig:v1', bad]] as const) {
    cli(['--store', src, 'sign', ref, '--key', join(work, 'stmt'), '--fsverity-key', c.key, '--fsverity-cert', c.cert]);
  }
  // Kernel, initramfs (cached), and the root disk with everything the VM runs.
  let kernel: ReturnType<typeof ensureKernel>;
  try {
    kernel = ensureKernel();
  } catch (e) {
    unavailable = `cannot get the kernel package ${KERNEL_PACKAGE} (${(e as Error).message.split('\n')[0]})`;
    console.log(`# VM tests skipped: ${unavailable}`);
    return;
  }
  const initramfs = ensureInitramfs(kernel);
  const root = join(work, 'root');
  buildRootTree(root, inputs, join(REPO, 'test', 'vm', 'scenario.sh'));
  const disk = join(work, 'disk.img');
  makeExt4(root, disk, 384);
  rmSync(root, { recursive: true, force: true });
  const run = await bootVm({
    vmlinuz: kernel.vmlinuz,
    initramfs,
    disk,
    timeoutSeconds: 600,
    onLine: process.env.CFSDIST_VM_VERBOSE ? (l) => console.log(`# ${l}`) : undefined,
  });
  consoleText = run.console;
  bootSeconds = run.seconds;
  lines = parse(run.console);
  writeFileSync(join(REPO, 'dist', 'vm-console.log'), run.console);
  console.log(`# VM: booted ${kernel.version}, all scenarios in ${run.seconds.toFixed(1)} s (console in dist/vm-console.log)`);
  rmSync(work, { recursive: true, force: true });
});

const vt = (name: string, fn: () => void): void => {
  test(name, { skip: MISSING ? `needs the VM: ${MISSING}` : false }, (t) => {
    if (unavailable) {
      if (process.env.CI === 'true') assert.fail(`needs the VM: ${unavailable}`);
      t.skip(`needs the VM: ${unavailable}`);
      return;
    }
    fn();
  });
};

vt('VM: the kernel boots and every scenario ran to the end', () => {
  assert.ok(lines.has('done'), `the scenario did not finish; console:\n${consoleText.slice(-6000)}`);
  assert.equal(one('serve').listening, '1');
  console.log(`# VM scenarios: ${one('done').seconds} s inside the VM, ${bootSeconds.toFixed(1)} s in all`);
});

vt('VM: pull into an ext4 verity store enables fs-verity on every object; fsck checks the kernel digests', () => {
  assert.equal(one('pull').rc, '0', pasteOf('pull'));
  const fsck = json('fsck-clean') as { ok: boolean; objects: number; verity: { supported: boolean }; kernel: { measured: number; withoutVerity: unknown[]; mismatched: unknown[] } };
  assert.equal(fsck.ok, true);
  assert.equal(fsck.verity.supported, true, 'the store probe says fs-verity is supported');
  const pulled = json('pull') as { objects: { needed: number } };
  assert.ok(pulled.objects.needed >= 8);
  assert.equal(fsck.objects, pulled.objects.needed);
  // Every object and the image were measured by the kernel, none lacks fs-verity.
  assert.equal(fsck.kernel.measured, fsck.objects + 1);
  assert.deepEqual(fsck.kernel.withoutVerity, []);
  const m = one('measure');
  assert.match(m.name!, /^[0-9a-f]{64}$/);
  assert.equal(m.kernel, m.name, 'FS_IOC_MEASURE_VERITY of an object equals its name');
  console.log(`# ${pasteOf('measure')}`);
});

vt('VM: mount with verity=require reads every file back equal to the source', () => {
  assert.equal(one('mount').rc, '0', pasteOf('mount'));
  const mnt = json('mount') as { verity: boolean; imageCheck: string };
  assert.equal(mnt.verity, true);
  assert.equal(mnt.imageCheck, 'kernel', 'the image digest is the kernel measurement');
  assert.match(pasteOf('mount'), /verity=require/);
  assert.equal(one('readback').rc, '0');
  assert.ok(Number(one('readback').files) >= 20);
});

vt('VM: an object replaced by other content (fs-verity on) gives EIO, never bytes; fsck names it', () => {
  const t = one('tamper-other-content');
  assert.notEqual(t.rc, '0');
  assert.equal(t.bytes, '0', 'no byte of the wrong content is read');
  assert.match(t.err!, /Input\/output_error/);
  assert.equal(one('tamper-others-intact').rc, '0', 'every other file still reads right');
  const fsck = json('fsck-other-content') as { ok: boolean; corruptObjects: { hex: string }[] };
  assert.equal(fsck.ok, false);
  assert.deepEqual(fsck.corruptObjects.map((o) => o.hex), [one('measure').name]);
  console.log(pasteOf('tamper-other-content').split('\n').map((l) => `# ${l}`).join('\n'));
});

vt('VM: an object with the right content but without fs-verity gives EIO; fsck names it, --repair enables it', () => {
  const t = one('tamper-no-verity');
  assert.notEqual(t.rc, '0');
  assert.equal(t.bytes, '0');
  assert.match(t.err!, /Input\/output_error/);
  const fsck = json('fsck-no-verity') as { ok: boolean; corruptObjects: unknown[]; kernel: { withoutVerity: { hex: string; kind: string }[] } };
  assert.equal(fsck.ok, false);
  assert.deepEqual(fsck.corruptObjects, []);
  assert.deepEqual(fsck.kernel.withoutVerity.map((o) => [o.kind, o.hex]), [['object', one('measure').name]]);
  const rep = json('fsck-repair') as { kernel: { withoutVerity: { enabled?: boolean }[] } };
  assert.equal(rep.kernel.withoutVerity[0]?.enabled, true);
  assert.equal(one('fsck-after-repair').rc, '0');
  assert.equal(one('readback-after-repair').rc, '0');
  console.log(pasteOf('tamper-no-verity').split('\n').map((l) => `# ${l}`).join('\n'));
});

vt('VM: the FUSE mount agrees with the kernel mount on every file', () => {
  assert.equal(one('fuse-mount').rc, '0', pasteOf('fuse-mount'));
  assert.equal(one('fuse-content').rc, '0');
  assert.equal(one('fuse-meta').rc, '0', pasteOf('fuse-meta'));
  assert.ok(Number(one('fuse-meta').entries) >= 25);
});

vt('VM: cfsdist run starts a container from the verity mount', () => {
  assert.equal(one('pull-run').rc, '0', pasteOf('pull-run'));
  const r = one('run');
  assert.equal(r.rc, '0', pasteOf('run'));
  assert.equal(r.out, 'hello-from-the-vm|from_the_image|');
  assert.equal(one('containers-left').n, '0');
});

vt('VM: builtin signatures — the signed image mounts, one signed by another key is refused by the kernel', () => {
  assert.equal(one('keyring').rc, '0');
  assert.equal(one('pull-signed').rc, '0');
  assert.equal(one('pull-badsig').rc, '0', 'the statement is trusted: the pull itself succeeds');
  assert.equal(one('signatures-stored').n, '2');
  const carries = (lines.get('image-signature') ?? []).map((l) => l.carries).sort();
  assert.deepEqual(carries, ['0', '1'], 'the kernel took the good signature, refused the other');
  assert.equal(one('sig-good-mount').rc, '0', pasteOf('sig-good-mount'));
  const good = json('sig-good-mount') as { imageSigned: boolean; verity: boolean };
  assert.equal(good.imageSigned, true);
  assert.equal(good.verity, true);
  assert.equal(one('sig-good-readback').rc, '0');
  const bad = one('sig-bad-mount');
  assert.notEqual(bad.rc, '0');
  assert.equal(bad.mounted, '0');
  assert.match(pasteOf('sig-bad-mount'), /refused its fs-verity signature: .*(Required key not available|Key was rejected)/i);
  const k = one('kernel-refuses');
  assert.notEqual(k.rc, '0');
  assert.match(k.err!, /Required_key_not_available|Key_was_rejected|Bad_message/);
  // fs.verity.require_signatures=1: the kernel's own policy.
  assert.notEqual(one('require-unsigned-enable').rc, '0', 'an unsigned enable is refused');
  assert.notEqual(one('require-bad-mount').rc, '0', pasteOf('require-bad-mount'));
  assert.equal(one('require-bad-mount').mounted, '0');
  for (const s of ['keyring', 'image-signature', 'sig-good-mount', 'sig-bad-mount', 'kernel-refuses', 'require-unsigned-enable', 'require-bad-mount', 'require-good-mount', 'require-object-read']) {
    console.log(pasteOf(s).split('\n').map((l) => `# ${l}`).join('\n'));
  }
});
