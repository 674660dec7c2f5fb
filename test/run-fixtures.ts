/**
 * A small real container image for run tests: a busybox-static root filesystem with users and
 * groups, packed into an OCI layout by umoci (tar layer, `umoci config` for Entrypoint, Cmd,
 * Env, User, WorkingDir), imported into a store by the CLI as users do.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, runCli } from './helpers.js';

const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'echo', 'cat', 'id', 'env', 'pwd', 'sleep', 'ls', 'touch', 'sort', 'true', 'false', 'mkdir', 'stat', 'head', 'hostname'];

/** A skip reason when root, runc, umoci or a static busybox are missing, else false. */
export function runcMissing(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (mounts, runc); CI runs as root';
  for (const [tool, pkg] of [['runc', 'runc'], ['umoci', 'umoci']]) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} not installed (Debian package ${pkg}; .ci/run installs it)`;
    }
  }
  try {
    const f = execFileSync('file', ['-L', BUSYBOX], { encoding: 'utf8' });
    if (!/statically linked|static-pie/.test(f)) return `${BUSYBOX} is not statically linked (install busybox-static)`;
  } catch {
    if (!existsSync(BUSYBOX)) return `${BUSYBOX} missing (install busybox-static)`;
  }
  return false;
}

/** Image configs by tag: [umoci config flags]. */
export const CONFIGS: Record<string, string[]> = {
  // Cmd only.
  cmd: ['--config.cmd', 'echo', '--config.cmd', 'from-cmd'],
  // Entrypoint and Cmd.
  both: ['--config.entrypoint', 'echo', '--config.entrypoint', 'ep', '--config.cmd', 'from-cmd'],
  // Entrypoint only.
  ep: ['--config.entrypoint', 'echo', '--config.entrypoint', 'ep'],
  // Neither.
  none: [],
  // A full config: env, non-root user by name, working directory absent from the image.
  full: [
    '--config.cmd', 'sh', '--config.cmd', '-c', '--config.cmd', 'id; pwd; env | sort',
    '--config.env', 'PATH=/bin', '--config.env', 'FOO=image', '--config.env', 'BAR=keep',
    '--config.user', 'alice', '--config.workingdir', '/home/alice/work', '--config.label', 'org.example.k=v',
  ],
};

/** Build the layout (tags = CONFIGS keys) in `dir`; returns its path. */
export function busyboxLayout(dir: string): string {
  const root = join(dir, 'rootfs');
  for (const d of ['bin', 'etc', 'tmp', 'home/alice', 'root', 'proc', 'sys', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
  writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001:Alice:/home/alice:/bin/sh\nbob:x:1002:1002::/home/bob:/bin/sh\n');
  writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\nwheel:x:10:alice\nstaff:x:50:alice,bob\nalice:x:1001:\nbob:x:1002:\n');
  writeFileSync(join(root, 'etc', 'image-file'), 'from the image\n');
  chmodSync(join(root, 'tmp'), 0o1777);
  const tar = join(dir, 'layer.tar');
  execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', tar, '.']);
  const layout = join(dir, 'oci');
  execFileSync('umoci', ['init', '--layout', layout]);
  for (const [tag, flags] of Object.entries(CONFIGS)) {
    execFileSync('umoci', ['new', '--image', `${layout}:${tag}`]);
    execFileSync('umoci', ['raw', 'add-layer', '--image', `${layout}:${tag}`, tar]);
    if (flags.length) execFileSync('umoci', ['config', '--image', `${layout}:${tag}`, ...flags]);
  }
  return layout;
}

/** Import every tag of the layout into `store` as bb:TAG. */
export function importAll(store: string, layout: string): void {
  for (const tag of Object.keys(CONFIGS)) {
    const r = runCli(['--store', store, 'import', `oci:${layout}:${tag}`, `bb:${tag}`]);
    if (r.status !== 0) throw new Error(`import ${tag}: ${r.stderr}`);
  }
}

/** `cfsdist --store STORE run --no-verity bb:cmd` of a shell that answers SIGTERM with
 * "got-TERM" and exit 143, sent SIGTERM once it printed "ready": its status and output. */
export async function runAndTerminate(store: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, '--store', store, 'run', '--no-verity', 'bb:cmd', 'sh', '-c', 'trap "echo got-TERM; exit 143" TERM; echo ready; while :; do sleep 0.05; done'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      if (stdout.includes('ready')) resolve();
    }),
  );
  child.kill('SIGTERM');
  const status = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  return { status, stdout, stderr };
}
