/**
 * Kernel and tool differences, fenced off from the main mount path (kernel.ts reads as if every
 * kernel were new): what the kernel offers (/proc/filesystems), mount(8) for kernels or machines
 * without the new mount API, loop devices for kernels whose EROFS cannot mount a file, the
 * legacy `lowerdir=A::B` syntax, and test switches that force each fallback on a new kernel so
 * the fallbacks stay tested.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { MountError } from './errors.js';

/** Filesystem types the running kernel has registered. */
export function kernelFilesystems(): Set<string> {
  let text = '';
  try {
    text = readFileSync('/proc/filesystems', 'latin1');
  } catch {
    return new Set();
  }
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const name = line.trim().split(/\s+/).pop();
    if (name) out.add(name);
  }
  return out;
}

/** Why the kernel path cannot be used here, or undefined when it can. */
export function kernelMountUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  const fs = kernelFilesystems();
  if (!fs.has('erofs')) return 'the kernel has no erofs';
  if (!fs.has('overlay')) return 'the kernel has no overlayfs';
  return undefined;
}

/** Why a FUSE mount cannot be made here, or undefined when it can. */
export function fuseUnavailable(): string | undefined {
  if (!kernelFilesystems().has('fuse')) return 'the kernel has no FUSE';
  if (process.getuid?.() !== 0) return 'mounting FUSE without root needs fusermount3, which cfsdist does not drive yet';
  return undefined;
}

/** Fallbacks to take even where the preferred path works (tests; `CFSDIST_MOUNT_COMPAT`). */
export interface CompatForce {
  /** Attach the image to a loop device instead of mounting the file. */
  loop?: boolean;
  /** Mount EROFS on a staging directory instead of passing the detached mount by fd. */
  staging?: boolean;
  /** Use `lowerdir=A::B` instead of `lowerdir+`/`datadir+`. */
  lowerdir?: boolean;
  /** Use mount(8) instead of the new mount API. */
  mount8?: boolean;
}

/** Parse `CFSDIST_MOUNT_COMPAT` (comma list of loop, staging, lowerdir, mount8). */
export function compatFromEnv(value = process.env.CFSDIST_MOUNT_COMPAT): CompatForce {
  const f: CompatForce = {};
  for (const w of (value ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (w === 'loop' || w === 'staging' || w === 'lowerdir' || w === 'mount8') f[w] = true;
    else throw new MountError('BAD_COMPAT', `CFSDIST_MOUNT_COMPAT: unknown switch ${JSON.stringify(w)} (loop, staging, lowerdir, mount8)`);
  }
  return f;
}

/** Result of running a tool. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a tool; never throws for a non-zero exit (ENOENT is reported as code 127). */
export function runTool(cmd: string, args: string[], opts: { fds?: number[]; timeoutMs?: number } = {}): Promise<ToolResult> {
  return new Promise((resolve) => {
    if (opts.fds?.length) {
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe', ...opts.fds] });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (e) => resolve({ code: 127, stdout, stderr: e.message }));
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
      return;
    }
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      const code = !e ? 0 : e.code === 'ENOENT' ? 127 : typeof e.code === 'number' ? e.code : 1;
      resolve({ code, stdout: String(stdout), stderr: String(stderr || (e && e.code === 'ENOENT' ? `${cmd} is not installed` : '')) });
    });
  });
}

/** mount(8): `mount -t TYPE -o OPTIONS SOURCE TARGET` (options must not contain commas). */
export async function legacyMount(type: string, source: string, target: string, options: string[], fds: number[] = []): Promise<void> {
  for (const o of options) {
    if (o.includes(',')) throw new MountError('BAD_PATH', `cannot pass ${JSON.stringify(o)} to mount(8): it contains a comma`);
  }
  const r = await runTool('mount', ['-t', type, '-o', options.join(','), source, target], { fds });
  if (r.code !== 0) throw new MountError('MOUNT_FAILED', `mount -t ${type} ${source} ${target}: ${r.stderr.trim() || `exit ${r.code}`}`);
}

/** umount(8) on a path (`-l`: lazy). Resolves to the error text, or undefined on success. */
export async function runUmount(target: string, lazy = false): Promise<string | undefined> {
  const r = await runTool('umount', [...(lazy ? ['-l'] : []), '-c', target]);
  return r.code === 0 ? undefined : r.stderr.trim() || `umount exited ${r.code}`;
}

/** Escape a path for overlayfs' `lowerdir=` list (`:` and `\` are special there). */
export function escapeLowerdir(path: string): string {
  return path.replace(/[\\:]/g, (c) => `\\${c}`);
}

/** Attach a file read-only to a free loop device; the device path. */
export async function attachLoop(file: string): Promise<string> {
  const r = await runTool('losetup', ['--find', '--show', '--read-only', file]);
  const dev = r.stdout.trim();
  if (r.code !== 0 || !dev.startsWith('/dev/')) throw new MountError('LOOP_FAILED', `losetup ${file}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return dev;
}

/** Detach a loop device. A device still in use (mounted) is only marked to detach itself when
 * its last user goes (the kernel's autoclear), which is what a mount wants. */
export async function detachLoop(dev: string): Promise<string | undefined> {
  const r = await runTool('losetup', ['-d', dev]);
  return r.code === 0 ? undefined : r.stderr.trim() || `losetup -d exited ${r.code}`;
}

/** One attached loop device. */
export interface LoopDevice {
  name: string;
  backFile: string;
  autoclear: boolean;
}

/** Loop devices attached right now (empty when losetup is missing). */
export async function listLoops(): Promise<LoopDevice[]> {
  const r = await runTool('losetup', ['--list', '--json', '--output', 'NAME,BACK-FILE,AUTOCLEAR']);
  if (r.code !== 0 || !r.stdout.trim()) return [];
  try {
    const j = JSON.parse(r.stdout) as { loopdevices?: { name: string; 'back-file'?: string; autoclear?: boolean | string }[] };
    return (j.loopdevices ?? []).map((d) => ({
      name: d.name,
      backFile: (d['back-file'] ?? '').replace(/ \(deleted\)$/, ''),
      autoclear: d.autoclear === true || d.autoclear === '1',
    }));
  } catch {
    return [];
  }
}

/** Loop devices whose backing file is `file`. */
export async function loopsBackedBy(file: string): Promise<string[]> {
  return (await listLoops()).filter((l) => l.backFile === file).map((l) => l.name);
}
