/**
 * A seeded generator of realistic composefs dumpfiles for benchmarks: a rootfs-like tree of
 * directories, external (object-backed) files with digests, small inline files, symlinks,
 * hardlinks, a few devices, shared SELinux labels and some user xattrs. Same arguments, same
 * bytes.
 */
import { rng } from '../test/random-tree.js';


const WORDS = ['lib', 'bin', 'share', 'doc', 'locale', 'python3', 'site-packages', 'include', 'man', 'etc', 'conf', 'data', 'cache', 'icons', 'x86_64', 'modules', 'firmware', 'perl', 'java', 'zoneinfo'];
const EXTS = ['', '.so', '.so.1', '.py', '.pyc', '.h', '.gz', '.conf', '.txt', '.json', '.mo', '.png', '.pl', '.xml'];
const LABELS = ['bin_t', 'lib_t', 'usr_t', 'etc_t', 'locale_t', 'textrel_shlib_t', 'man_t', 'cert_t'];
const HEX = '0123456789abcdef';
const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';

/**
 * A dumpfile of about `entries` lines (the root included), parents before children; the
 * content of the tree depends only on `seed`.
 */
export function generateDumpfile(entries: number, seed: number): Buffer {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const hex = (n: number): string => {
    let s = '';
    for (let i = 0; i < n; i++) s += HEX[Math.floor(r() * 16)];
    return s;
  };
  const base = 1_690_000_000;
  const mtime = (): string => `${base + Math.floor(r() * 30_000_000)}.0`;
  const xattrs = (): string => {
    let s = '';
    if (r() < 0.35) s += ` security.selinux=system_u:object_r:${pick(LABELS)}:s0`;
    if (r() < 0.03) s += ` user.checksum=${hex(16)}`;
    return s;
  };
  const lines: string[] = [`/ 0 40755 2 0 0 0 ${base}.0 - - - security.selinux=system_u:object_r:root_t:s0\n`];
  const dirs: string[] = ['/'];
  const files: string[] = [];
  for (let i = 1; i < entries; i++) {
    // Favour recent directories so the tree gets depth, like a real rootfs.
    const parent = r() < 0.6 ? dirs[dirs.length - 1 - Math.floor(r() * Math.min(dirs.length, 20))]! : pick(dirs);
    const name = `${pick(WORDS)}-${i.toString(36)}`;
    const path = parent === '/' ? `/${name}` : `${parent}/${name}`;
    const x = r();
    if (x < 0.1) {
      lines.push(`${path} 0 40755 2 0 0 0 ${mtime()} - - -${xattrs()}\n`);
      dirs.push(path);
    } else if (x < 0.65) {
      const size = Math.max(1, Math.floor(Math.exp(r() * Math.log(20_000_000))));
      const digest = hex(64);
      const mode = r() < 0.2 ? '100755' : '100644';
      const file = path + pick(EXTS);
      lines.push(`${file} ${size} ${mode} 1 0 0 0 ${mtime()} ${digest.slice(0, 2)}/${digest.slice(2)} - ${digest}${xattrs()}\n`);
      files.push(file);
    } else if (x < 0.75) {
      const size = 1 + Math.floor(r() * 64);
      let content = '';
      for (let k = 0; k < size; k++) content += ALNUM[Math.floor(r() * ALNUM.length)];
      lines.push(`${path}.conf ${size} 100644 1 0 0 0 ${mtime()} - ${content} -${xattrs()}\n`);
    } else if (x < 0.78) {
      lines.push(`${path}.empty 0 100644 1 0 0 0 ${mtime()} - - -${xattrs()}\n`);
    } else if (x < 0.95) {
      const depth = Math.floor(r() * 3);
      const target = `${'../'.repeat(depth)}${pick(WORDS)}/${pick(WORDS)}-${Math.floor(r() * entries).toString(36)}${pick(EXTS)}`;
      lines.push(`${path} ${target.length} 120777 1 0 0 0 ${mtime()} ${target} - -${xattrs()}\n`);
    } else if (x < 0.98 && files.length > 0) {
      lines.push(`${path} 0 @100644 0 0 0 0 0.0 ${pick(files)} - -\n`);
    } else if (x < 0.99) {
      lines.push(`${path} 0 20666 1 0 0 ${1 + Math.floor(r() * 4000)} ${mtime()} - - -\n`);
    } else {
      lines.push(`${path} 0 10644 1 0 0 0 ${mtime()} - - -\n`);
    }
  }
  return Buffer.from(lines.join(''), 'latin1');
}
