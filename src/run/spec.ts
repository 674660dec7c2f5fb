/**
 * The OCI runtime-spec config.json for a container: the image-spec conversion (as umoci does
 * it) with podman's default capabilities, mounts and masked paths.
 */
import type { ExecUser } from './user.js';

/** What {@link runtimeSpec} needs: the resolved process and root. */
export interface SpecInput {
  args: string[];
  env: string[];
  cwd: string;
  user: ExecUser;
  hostname: string;
  /** Written into root.path as is, e.g. 'rootfs' (relative to the bundle) or absolute. */
  rootfs: string;
  readonly: boolean;
  terminal?: boolean;
  /** Image labels; they become the spec's annotations. */
  labels?: Record<string, string>;
}

/** One entry of `mounts`. */
export interface SpecMount { destination: string; type: string; source: string; options: string[] }

/** The subset of an OCI runtime-spec config.json that {@link runtimeSpec} writes. */
export interface RuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: SpecMount[];
  linux: {
    namespaces: { type: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
  };
  annotations?: Record<string, string>;
}

/** podman's default capability set. */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_NET_BIND_SERVICE',
  'CAP_SETFCAP', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_SETUID', 'CAP_SYS_CHROOT',
];

/** runc's default masked paths. */
const MASKED_PATHS: readonly string[] = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/proc/scsi',
];

/** runc's default read-only paths. */
const READONLY_PATHS: readonly string[] = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** The default mounts, fresh on each call. */
function defaultMounts(): SpecMount[] {
  const m = (destination: string, type: string, source: string, options: string[]): SpecMount => ({ destination, type, source, options });
  return [
    m('/proc', 'proc', 'proc', ['nosuid', 'noexec', 'nodev']),
    m('/dev', 'tmpfs', 'tmpfs', ['nosuid', 'strictatime', 'mode=755', 'size=65536k']),
    m('/dev/pts', 'devpts', 'devpts', ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5']),
    m('/dev/shm', 'tmpfs', 'shm', ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k']),
    m('/dev/mqueue', 'mqueue', 'mqueue', ['nosuid', 'noexec', 'nodev']),
    m('/sys', 'sysfs', 'sysfs', ['nosuid', 'noexec', 'nodev', 'ro']),
    m('/sys/fs/cgroup', 'cgroup', 'cgroup', ['nosuid', 'noexec', 'nodev', 'relatime', 'ro']),
  ];
}

const hasKey = (env: string[], key: string): boolean => env.some((e) => e.startsWith(`${key}=`));

/**
 * An OCI runtime-spec config.json object (ociVersion 1.0.2). Adds HOSTNAME and HOME (the
 * user's home) to the environment when absent. Non-root processes get the capabilities only
 * in the bounding set (empty effective and permitted), as podman does.
 */
export function runtimeSpec(i: SpecInput): RuntimeSpec {
  const env = [...i.env];
  if (!hasKey(env, 'HOSTNAME')) env.push(`HOSTNAME=${i.hostname}`);
  if (!hasKey(env, 'HOME')) env.push(`HOME=${i.user.home}`);
  const user: RuntimeSpec['process']['user'] = { uid: i.user.uid, gid: i.user.gid };
  if (i.user.additionalGids.length > 0) user.additionalGids = [...i.user.additionalGids];
  const root = i.user.uid === 0;
  const spec: RuntimeSpec = {
    ociVersion: '1.0.2',
    process: {
      terminal: i.terminal ?? false,
      user,
      args: [...i.args],
      env,
      cwd: i.cwd,
      capabilities: {
        bounding: [...DEFAULT_CAPABILITIES],
        effective: root ? [...DEFAULT_CAPABILITIES] : [],
        permitted: root ? [...DEFAULT_CAPABILITIES] : [],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: i.rootfs, readonly: i.readonly },
    hostname: i.hostname,
    mounts: defaultMounts(),
    linux: {
      // No network namespace: the container shares the host's network (host networking).
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
  // image-spec conversion: the image's labels become annotations.
  if (i.labels && Object.keys(i.labels).length > 0) spec.annotations = { ...i.labels };
  return spec;
}
