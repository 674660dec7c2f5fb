/**
 * A throwaway VM with a kernel that has fs-verity: Debian's stock cloud kernel, booted under
 * qemu (TCG software emulation: this machine's /dev/kvm is not usable), running cfsdist itself.
 *
 *   kernel     `apt-get download` + `dpkg -x` of the Debian package (no initramfs-tools, no
 *              udev); vmlinuz and the few modules we need (decompressed), cached
 *   initramfs  busybox-static, the modules, and test/vm/init.sh as /init (a newc cpio written
 *              by cpio.ts), cached
 *   root disk  an ext4 image with the verity feature, made by `mkfs.ext4 -d` from a directory
 *              tree: busybox applets, the host's node, perl, fsverity, keyctl, mount tools and
 *              runc with the shared libraries `ldd` names, the built project (dist/src, bin,
 *              package.json, production node_modules), and the scenario's inputs under /vm.
 *              init.sh mounts it and runs /vm/scenario.sh chrooted into it.
 *   results    the serial console (qemu -nographic stdout), line by line.
 *
 * The cache lives in $CFSDIST_VM_CACHE (default /var/cache/cfsdist-vm).
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { cpioNewc, dirEntry, fileEntry, linkEntry } from './cpio.js';
import type { CpioEntry } from './cpio.js';
import { REPO } from '../helpers.js';

/** The kernel package: has CONFIG_FS_VERITY=y and FS_VERITY_BUILTIN_SIGNATURES=y. */
export const KERNEL_PACKAGE = process.env.CFSDIST_VM_KERNEL ?? 'linux-image-6.12.118+deb12-cloud-amd64';
/** Modules the scenarios need, in load order (the package has no modules.dep: no depmod ran). */
export const MODULES = ['drivers/block/virtio_blk', 'lib/libcrc32c', 'fs/erofs/erofs', 'fs/overlayfs/overlay', 'drivers/block/loop'];
export const CACHE = process.env.CFSDIST_VM_CACHE ?? '/var/cache/cfsdist-vm';
const QEMU = 'qemu-system-x86_64';

/** Busybox applets linked into the VM's /bin. */
const APPLETS = [
  'sh', 'ash', 'cat', 'cp', 'mv', 'rm', 'ln', 'ls', 'mkdir', 'rmdir', 'chmod', 'echo', 'printf', 'test', '[', 'true', 'false',
  'find', 'sort', 'uniq', 'sha256sum', 'cmp', 'diff', 'head', 'tail', 'grep', 'sed', 'awk', 'cut', 'tr', 'wc', 'xargs', 'sleep',
  'ip', 'dmesg', 'stat', 'env', 'id', 'date', 'dd', 'sync', 'kill', 'uname', 'tee', 'basename', 'dirname', 'seq', 'timeout',
  'poweroff', 'touch', 'hostname', 'mountpoint', 'cut', 'od', 'nproc', 'ps', 'pidof', 'which', 'expr', 'readlink', 'du', 'df',
];
/** Host programs copied with their libraries. */
const PROGRAMS = ['/usr/bin/node', '/usr/bin/perl', '/usr/bin/fsverity', '/usr/bin/keyctl', '/usr/bin/mount', '/usr/bin/umount', '/usr/sbin/losetup', '/usr/sbin/runc'];

/** Why the VM cannot run here (missing qemu, kernel package, tools), or false. */
export function vmMissing(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (mkfs.ext4 -d of root-owned files, apt-get download); CI runs as root';
  if (process.arch !== 'x64') return `the VM is x86_64 (this is ${process.arch})`;
  for (const [tool, pkg] of [[QEMU, 'qemu-system-x86'], ['mkfs.ext4', 'e2fsprogs'], ['keyctl', 'keyutils'], ['fsverity', 'fsverity'], ['runc', 'runc'], ['openssl', 'openssl']]) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} not installed (Debian package ${pkg}; .ci/run installs it)`;
    }
  }
  if (!existsSync('/bin/busybox') || !/statically linked|static-pie/.test(execFileSync('file', ['-L', '/bin/busybox'], { encoding: 'utf8' }))) return '/bin/busybox is not a static busybox (install busybox-static)';
  return false;
}

/** Kernel and modules, unpacked once from the Debian package into the cache. */
export function ensureKernel(): { vmlinuz: string; modules: string; version: string } {
  const dir = join(CACHE, KERNEL_PACKAGE);
  const done = join(dir, 'ready');
  if (!existsSync(done)) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, 'deb'), { recursive: true });
    // apt-get download runs as _apt where it can: give it a directory it may write.
    chmodSync(join(dir, 'deb'), 0o777);
    const download = (): void => void execFileSync('apt-get', ['download', KERNEL_PACKAGE], { cwd: join(dir, 'deb'), stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      download();
    } catch {
      // A fresh machine may have no package lists yet.
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
      download();
    }
    const deb = readdirSync(join(dir, 'deb')).find((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${KERNEL_PACKAGE} gave no .deb`);
    execFileSync('dpkg', ['-x', join(dir, 'deb', deb), join(dir, 'x')]);
    const version = readdirSync(join(dir, 'x', 'lib', 'modules'))[0]!;
    copyFileSync(join(dir, 'x', 'boot', `vmlinuz-${version}`), join(dir, 'vmlinuz'));
    mkdirSync(join(dir, 'modules'));
    for (const m of MODULES) {
      const src = join(dir, 'x', 'lib', 'modules', version, 'kernel', `${m}.ko.xz`);
      const name = m.slice(m.lastIndexOf('/') + 1);
      writeFileSync(join(dir, 'modules', `${name}.ko`), execFileSync('xz', ['-dc', src], { maxBuffer: 64 << 20 }));
    }
    writeFileSync(join(dir, 'version'), version);
    rmSync(join(dir, 'x'), { recursive: true, force: true });
    rmSync(join(dir, 'deb'), { recursive: true, force: true });
    writeFileSync(done, '');
  }
  return { vmlinuz: join(dir, 'vmlinuz'), modules: join(dir, 'modules'), version: readFileSync(join(dir, 'version'), 'utf8') };
}

/** The initramfs (busybox, modules, init.sh), cached by content. */
export function ensureInitramfs(kernel: { modules: string }): string {
  const init = readFileSync(join(REPO, 'test', 'vm', 'init.sh'));
  const busybox = readFileSync('/bin/busybox');
  const mods = MODULES.map((m) => m.slice(m.lastIndexOf('/') + 1));
  const h = createHash('sha256').update(init).update(busybox).update(KERNEL_PACKAGE).update(mods.join(',')).digest('hex').slice(0, 16);
  const out = join(CACHE, `initramfs-${h}.cpio.gz`);
  if (existsSync(out)) return out;
  const entries: CpioEntry[] = [dirEntry('bin'), fileEntry('bin/busybox', busybox, 0o755), linkEntry('bin/sh', 'busybox'), fileEntry('init', init, 0o755), dirEntry('modules')];
  for (const m of mods) entries.push(fileEntry(`modules/${m}.ko`, readFileSync(join(kernel.modules, `${m}.ko`))));
  for (const d of ['proc', 'sys', 'dev', 'newroot']) entries.push(dirEntry(d));
  writeFileSync(out + '.tmp', cpioNewc(entries));
  execFileSync('mv', [out + '.tmp', out]);
  return out;
}

/** Copy a host file to the same path under `root` (symlinks on the way resolved to files). */
function copyHostFile(root: string, path: string, mode?: number): void {
  const dest = join(root, path);
  if (existsSync(dest)) return;
  mkdirSync(dirname(dest), { recursive: true });
  copyFileSync(realpathSync(path), dest);
  chmodSync(dest, mode ?? statSync(path).mode & 0o7777);
}

/** A host program and the shared libraries it loads, at their host paths under `root`. */
function copyProgram(root: string, path: string): void {
  copyHostFile(root, path);
  const ldd = execFileSync('ldd', [path], { encoding: 'utf8' });
  for (const line of ldd.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) copyHostFile(root, m[1]!);
  }
}

/** Copy a directory tree (files, symlinks, directories). */
function copyTree(src: string, dest: string): void {
  cpSync(src, dest, { recursive: true, verbatimSymlinks: true, dereference: false });
}

/**
 * The VM's root filesystem as a directory: programs, the built project at /cfsdist, and
 * `inputs` (a directory) at /vm. `scenario` is copied to /vm/scenario.sh.
 */
export function buildRootTree(root: string, inputs: string, scenario: string): void {
  rmSync(root, { recursive: true, force: true });
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'run', 'mnt', 'root', 'var/tmp']) mkdirSync(join(root, d), { recursive: true });
  chmodSync(join(root, 'tmp'), 0o1777);
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  for (const a of new Set(APPLETS)) {
    const p = join(root, 'bin', a);
    if (!existsSync(p)) symlinkSync('busybox', p);
  }
  symlinkSync('../../bin/busybox', join(root, 'usr', 'bin', 'env'));
  for (const p of PROGRAMS) copyProgram(root, p);
  // perl's own modules (the mount shim uses strict and warnings).
  copyTree('/usr/lib/x86_64-linux-gnu/perl-base', join(root, 'usr/lib/x86_64-linux-gnu/perl-base'));
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\n');
  // The project as installed: compiled library and CLI, production dependencies.
  const app = join(root, 'cfsdist');
  mkdirSync(app);
  copyFileSync(join(REPO, 'package.json'), join(app, 'package.json'));
  copyTree(join(REPO, 'bin'), join(app, 'bin'));
  copyTree(join(REPO, 'dist', 'src'), join(app, 'dist', 'src'));
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  for (const dep of Object.keys(pkg.dependencies ?? {})) copyTree(join(REPO, 'node_modules', dep), join(app, 'node_modules', dep));
  copyTree(inputs, join(root, 'vm'));
  copyFileSync(scenario, join(root, 'vm', 'scenario.sh'));
  chmodSync(join(root, 'vm', 'scenario.sh'), 0o755);
}

/** Size in bytes of a directory tree (apparent sizes). */
function treeBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += treeBytes(p) + 4096;
    else n += lstatSync(p).size + 4096;
  }
  return n;
}

/** An ext4 image with the verity feature made from `root`, with `spareMiB` free for stores. */
export function makeExt4(root: string, image: string, spareMiB: number): void {
  const mib = Math.ceil(treeBytes(root) / (1 << 20) * 1.15) + spareMiB;
  rmSync(image, { force: true });
  execFileSync('truncate', ['-s', `${mib}M`, image]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-O', 'verity', '-b', '4096', '-L', 'cfsdist-vm', '-d', root, image], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** The console output of one boot and how long it took. */
export interface VmRun {
  console: string;
  seconds: number;
  exit: number | null;
}

/** Boot the kernel with the initramfs and `disk` as /dev/vda; returns the console. */
export function bootVm(o: { vmlinuz: string; initramfs: string; disk: string; timeoutSeconds: number; memMiB?: number; onLine?: (line: string) => void }): Promise<VmRun> {
  const t0 = performance.now();
  const args = [
    '-accel', 'tcg', '-cpu', 'max', '-m', String(o.memMiB ?? 1536), '-smp', '2', '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', o.vmlinuz, '-initrd', o.initramfs,
    '-append', 'console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init',
    '-drive', `file=${o.disk},if=virtio,format=raw,cache=unsafe`,
  ];
  return new Promise((resolve, reject) => {
    const p = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let pending = '';
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      out += `\n[cfsdist test: VM killed after ${o.timeoutSeconds} s]\n`;
    }, o.timeoutSeconds * 1000);
    p.stdout.on('data', (c: Buffer) => {
      const s = c.toString('utf8');
      out += s;
      pending += s;
      let i: number;
      while ((i = pending.indexOf('\n')) >= 0) {
        o.onLine?.(pending.slice(0, i).replace(/\r$/, ''));
        pending = pending.slice(i + 1);
      }
    });
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ console: out.replace(/\r/g, '') + (err ? `\n[qemu stderr] ${err}` : ''), seconds: (performance.now() - t0) / 1000, exit: code });
    });
  });
}
