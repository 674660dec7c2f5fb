/**
 * Containers: an image of the store mounted read-only with a writable overlay on top, an OCI
 * runtime spec made from its config, and an OCI runtime (runc) started on that bundle.
 *
 *   STORE/containers/<ID>/container.json   the record (below), written before anything is
 *                                          created and updated as the container changes phase
 *   STORE/containers/<ID>/upper/, work/    the container's writes (overlayfs upper and work)
 *   STORE/containers/<ID>/rootfs/          its root filesystem (mount point) — for `bundle`,
 *                                          the rootfs is DIR/rootfs instead
 *   STORE/containers/<ID>/lower/           the FUSE mount of the image (--fuse only)
 *   STORE/containers/<ID>/config.json      the runtime spec (`run`; `bundle` writes DIR/)
 *   STORE/containers/<ID>/runtime/         the runtime's state (`runc --root`)
 *
 * The record names the process that owns the container (`<pid>-<starttime>`): a `run` whose
 * process is gone (SIGKILL) left a stale container, which the next `run`, `gc` or
 * `fsck --repair` removes (cleanup.ts). While a container exists its image and config are gc
 * roots; the record is written under a store lease, so gc never runs between resolving the
 * image and recording that it is in use.
 *
 * The image and the objects are never written: they are lower layers; every write lands in
 * the container's own upper directory, so two containers of one image never see each other's.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Store } from '../store/store.js';
import type { ImageMeta } from '../store/store.js';
import { parseRef } from '../store/names.js';
import { isAlive, selfId } from '../store/procid.js';
import { isHexDigest, toHex } from '../verity/digest.js';
import { RunError } from './errors.js';
import { parseImageConfig, resolveArgs, mergeEnv, resolveWorkdir, parseSignal } from './command.js';
import type { ImageRunConfig } from './command.js';
import { resolveUser } from './user.js';
import { runtimeSpec } from './spec.js';
import { readInRoot, resolveInRoot } from './rootfs.js';
import { trace } from '../trace.js';
import { findRuntime, startRuntime, signalForwarder } from './runtime.js';
export { findRuntime, startRuntime, signalForwarder } from './runtime.js';
export type { RuntimeExit } from './runtime.js';

/** What is recorded about a container. */
export interface ContainerRecord {
  version: 1;
  /** Container ID: `--name`, else random hex. Also the runtime's container ID. */
  id: string;
  /** `run` (owned by a `cfsdist run` process) or `bundle` (lives while its rootfs is mounted). */
  kind: 'run' | 'bundle';
  /** `creating` until the rootfs is mounted, `running`, `exited` (kept: `--name`). */
  phase: 'creating' | 'running' | 'exited';
  /** Image digest (hex). */
  image: string;
  /** What the user named. */
  ref: string;
  /** Image config digest (`sha256:…`), when the image has one. */
  config?: string;
  /** `<pid>-<starttime>` of the owning process. */
  owner: string;
  /** Keep the directory (upper layer) after exit: `--name` without `--rm`. */
  keep: boolean;
  /** Canonical path of the root filesystem mount. */
  rootfs: string;
  /** `kernel` or `fuse`, once mounted. */
  mode?: 'kernel' | 'fuse';
  /** Runtime executable and its state root (`--root`), once started. */
  runtime?: string;
  runtimeRoot?: string;
  /** Exit status, once exited. */
  exitCode?: number;
  created: string;
}

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;
const RECORD = 'container.json';

/** Directory of container `id`. */
export function containerDir(store: Store, id: string): string {
  return join(store.containersDir, id);
}

/** Read a container's record; undefined when it has none (yet). */
export async function readRecord(store: Store, id: string): Promise<ContainerRecord | undefined> {
  let text: string;
  try {
    text = await readFile(join(containerDir(store, id), RECORD), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const r = JSON.parse(text) as ContainerRecord;
    if (r.version !== 1 || r.id !== id || !isHexDigest(r.image)) return undefined;
    return r;
  } catch {
    return undefined;
  }
}

/** Write a container's record atomically. */
export async function writeRecord(store: Store, r: ContainerRecord): Promise<void> {
  await store.writeFileAtomic(join(containerDir(store, r.id), RECORD), Buffer.from(JSON.stringify(r, null, 2) + '\n'));
}

/** IDs of all container directories. */
export async function listContainerIds(store: Store): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  const names = await readdir(store.containersDir).catch(() => [] as string[]);
  return names.filter((n) => NAME.test(n)).sort();
}

/** An image and what is known about the container image it came from. */
export interface ImageRef {
  digest: Buffer;
  path: string;
  meta: ImageMeta;
  /** Parsed config (its `config` field), when the image has one. */
  config?: ImageRunConfig;
  configBytes?: Buffer;
}

/** NAME[:TAG] or image digest → the image, its tag metadata and config. For a bare digest the
 * first tag naming that image with a config supplies it. */
export async function resolveImage(store: Store, ref: string): Promise<ImageRef> {
  const digest = await store.resolveImage(ref);
  let meta: ImageMeta = {};
  const bare = ref.startsWith('sha256:') ? ref.slice(7) : ref;
  if (!isHexDigest(bare)) {
    const { name, tag } = parseRef(ref);
    meta = (await store.getTagRecord(name, tag))?.meta ?? {};
  } else {
    const t = (await store.listTags()).find((e) => e.image.equals(digest) && e.meta.config);
    if (t) meta = t.meta;
  }
  const out: ImageRef = { digest, path: store.imagePath(digest), meta };
  if (meta.config) {
    out.configBytes = await store.readConfig(meta.config);
    out.config = parseImageConfig(out.configBytes).config;
  }
  return out;
}

/** Options of `createContainer`. */
export interface CreateOptions {
  ref: string;
  kind: 'run' | 'bundle';
  /** `--name`; default a random ID. */
  name?: string;
  keep?: boolean;
  /** Root filesystem mount point (bundle: DIR/rootfs); default the container's rootfs/. */
  rootfs?: string;
  /** Owning process (`<pid>-<starttime>`; default this one). */
  owner?: string;
}

/** Make a container's directory and record (under a lease: from then on gc keeps its image).
 * Stale containers of killed runs are removed first. */
export async function createContainer(store: Store, o: CreateOptions): Promise<{ record: ContainerRecord; image: ImageRef; dir: string }> {
  const { removeStaleContainers } = await import('./cleanup.js');
  await removeStaleContainers(store);
  return store.withLease(async () => {
    const image = await resolveImage(store, o.ref);
    const id = o.name ?? randomBytes(8).toString('hex');
    if (!NAME.test(id)) throw new RunError('BAD_NAME', `invalid container name ${JSON.stringify(id)}: use letters, digits, '_', '.', '-' (at most 128, not starting with a punctuation mark)`);
    const dir = containerDir(store, id);
    await mkdir(store.containersDir, { recursive: true });
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new RunError('NAME_IN_USE', `a container named ${id} exists (${dir}); remove it with cfsdist container rm ${id}`);
      }
      throw e;
    }
    const record: ContainerRecord = {
      version: 1,
      id,
      kind: o.kind,
      phase: 'creating',
      image: toHex(image.digest),
      ref: o.ref,
      config: image.meta.config,
      owner: o.owner ?? selfId(),
      keep: Boolean(o.keep),
      rootfs: o.rootfs ?? join(dir, 'rootfs'),
      created: new Date().toISOString(),
    };
    try {
      await writeRecord(store, record);
      for (const d of ['upper', 'work', ...(o.rootfs ? [] : ['rootfs'])]) await mkdir(join(dir, d), { mode: 0o755 });
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return { record, image, dir };
  });
}

/** How to mount a container's root filesystem. */
export interface RootfsOptions {
  /** Userspace mount of the image (verifies every read). */
  fuse?: boolean;
  /** Require fs-verity for the kernel mount (default true: refuse without it). */
  verity?: boolean;
  /** Messages for the user (stderr). */
  log?: (line: string) => void;
}

/** A mounted container rootfs; `release` unmounts it (FUSE: ends the session). */
export interface MountedRootfs {
  mode: 'kernel' | 'fuse';
  verity: boolean;
  release(): Promise<void>;
}

/** Mount image + writable upper at the record's rootfs (kernel, or FUSE lower + overlay). */
export async function mountRootfs(store: Store, rec: ContainerRecord, image: ImageRef, o: RootfsOptions): Promise<MountedRootfs> {
  if (image.meta.unsignedFrom) o.log?.(`cfsdist: ${rec.ref} is UNSIGNED: built locally from ${image.meta.unsignedFrom}`);
  const m = await import('../mount/index.js');
  const dir = containerDir(store, rec.id);
  const upper = { upperdir: join(dir, 'upper'), workdir: join(dir, 'work') };
  let fuse = Boolean(o.fuse);
  if (!fuse) {
    const why = m.kernelMountUnavailable();
    if (why) {
      o.log?.(`cfsdist: ${why}: using the userspace (FUSE) mount`);
      fuse = true;
    }
  }
  if (!fuse) {
    const force = m.compatFromEnv();
    // The mount helper (a process) starts while the image is checked; mountKernel ends it.
    const { MountApi } = await import('../mount/syscalls.js');
    const helper = force.mount8 ? undefined : MountApi.start();
    helper?.catch(() => undefined);
    let verity: boolean;
    try {
      // --no-verity: no need to ask the filesystem (a probe costs a process).
      verity = o.verity === false ? false : await store.objects.verity.probe();
      await m.checkImage({ path: image.path, digest: image.digest, ref: rec.ref }, store, { verity });
      if (!verity && o.verity !== false) {
        throw new RunError(
          'NO_VERITY',
          `${(store.objects.verity.message || `fs-verity is not available for ${store.objects.dir}`).replace(/; objects are stored without it$/, '')}. ` +
            'Without it the kernel does not check object contents against the image: use --no-verity to accept that, or --fuse (verifies every read).',
        );
      }
      rec.mode = 'kernel';
      await writeRecord(store, rec);
    } catch (e) {
      void helper?.then((a) => a?.end(), () => undefined);
      throw e;
    }
    await m.mountKernel({ image: image.path, objects: store.objects.dir, mountpoint: rec.rootfs, verity, ref: rec.ref, imageDigest: rec.image, upper, force, mountApi: helper });
    return { mode: 'kernel', verity, release: async () => void (await m.unmount(rec.rootfs)) };
  }
  const noFuse = m.fuseUnavailable();
  if (noFuse) throw new RunError('NO_FUSE', `cannot mount ${rec.ref} with FUSE: ${noFuse}`);
  const lower = join(dir, 'lower');
  await mkdir(lower, { recursive: true });
  rec.mode = 'fuse';
  await writeRecord(store, rec);
  const fm = await m.mountFuse({ image: image.path, imageDigest: image.digest, objects: store.objects.dir, mountpoint: lower, ref: rec.ref, log: o.log });
  try {
    const { legacyMount } = await import('../mount/compat.js');
    const esc = (p: string): string => p.replace(/[\\:,]/g, (c) => `\\${c}`);
    await legacyMount('overlay', 'cfsdist', rec.rootfs, [`lowerdir=${esc(lower)}`, `upperdir=${esc(upper.upperdir)}`, `workdir=${esc(upper.workdir)}`]);
  } catch (e) {
    await fm.unmount();
    throw e;
  }
  return {
    mode: 'fuse',
    verity: true,
    release: async () => {
      await unmountPlain(rec.rootfs);
      await fm.unmount();
    },
  };
}

/** Unmount a path if something is mounted there (lazily when busy). */
export async function unmountPlain(path: string): Promise<void> {
  const { mountAt } = await import('../mount/mountinfo.js');
  const { runUmount } = await import('../mount/compat.js');
  for (let i = 0; i < 3 && mountAt(path); i++) {
    const err = await runUmount(path, i === 2);
    if (err && i === 2 && mountAt(path)) throw new RunError('UMOUNT_FAILED', `umount ${path}: ${err}`);
  }
}

/** What the user asked for, over the image config. */
export interface ProcessOptions {
  command?: string[];
  entrypoint?: string;
  env?: string[];
  user?: string;
  workdir?: string;
  readOnly?: boolean;
  /** Hostname (default the container ID, at most 63 characters of it). */
  hostname?: string;
  /** How `root.path` is written (default `rootfs`, relative to the bundle). */
  rootPath?: string;
}

/** Build the runtime spec for a container whose rootfs is mounted: resolve the command, the
 * user (from the image's own /etc/passwd and /etc/group), create a missing working directory
 * in the upper layer. */
export async function buildSpec(rec: ContainerRecord, image: ImageRef, p: ProcessOptions, hostEnv: NodeJS.ProcessEnv = process.env): Promise<{ spec: ReturnType<typeof runtimeSpec>; stopSignal: NodeJS.Signals }> {
  const cfg: ImageRunConfig = image.config ?? {};
  if (!image.config && !(p.command?.length || p.entrypoint)) {
    throw new RunError('NO_COMMAND', `${rec.ref} has no image config (imported from a directory, or signed before configs were kept): give a COMMAND`);
  }
  const args = resolveArgs(cfg, p.command ?? [], p.entrypoint);
  const env = mergeEnv(cfg.Env, p.env ?? [], hostEnv);
  const cwd = resolveWorkdir(cfg.WorkingDir, p.workdir);
  const passwd = await readInRoot(rec.rootfs, '/etc/passwd');
  const group = await readInRoot(rec.rootfs, '/etc/group');
  const user = resolveUser(p.user ?? cfg.User ?? '', passwd, group);
  await resolveInRoot(rec.rootfs, cwd, { create: true });
  const spec = runtimeSpec({
    args,
    env,
    cwd,
    user,
    hostname: p.hostname ?? rec.id.slice(0, 63),
    rootfs: p.rootPath ?? 'rootfs',
    readonly: Boolean(p.readOnly),
    labels: cfg.Labels ?? undefined,
  });
  return { spec, stopSignal: parseSignal(cfg.StopSignal) };
}

/** Options of `runContainer`. */
export interface RunOptions extends PrepareOptions {
  /** Stdio of the container (default inherit). */
  stdio?: 'inherit' | 'pipe';
  /** Called once the runtime process started (tests, progress). */
  onStart?: (rec: ContainerRecord) => void;
}

/** Result of a container run. */
export interface RunResult {
  id: string;
  exitCode: number;
  /** Signal that ended the runtime process itself, if any. */
  signal?: string;
  mode: 'kernel' | 'fuse';
  verity: boolean;
  kept: boolean;
}

/** A container created and mounted, its spec written: ready for the runtime. */
export interface PreparedContainer {
  rec: ContainerRecord;
  /** The bundle directory (STORE/containers/ID: config.json, rootfs/). */
  dir: string;
  mounted: MountedRootfs;
  /** Runtime executable (absolute) and its state root. */
  runtime: string;
  runtimeRoot: string;
}

/** Options of `prepareContainer`. */
export interface PrepareOptions extends ProcessOptions, RootfsOptions {
  ref: string;
  /** `--name`; kept after exit unless `rm`. */
  name?: string;
  /** Remove the container on exit even with a name. */
  rm?: boolean;
  /** Runtime executable (default `runc`, looked up on $PATH). */
  runtime?: string;
  /** `<pid>-<starttime>` of the process that runs the runtime and owns the container (default
   * this one; the daemon prepares for a client). */
  owner?: string;
  /** Where `-e KEY` (no value) takes values from (default process.env). */
  hostEnv?: NodeJS.ProcessEnv;
}

/** Create the container, mount its rootfs, write its runtime spec and record it running. On
 * failure everything made is removed. */
export async function prepareContainer(store: Store, o: PrepareOptions): Promise<PreparedContainer> {
  const runtime = await findRuntime(o.runtime ?? 'runc');
  const keep = Boolean(o.name) && !o.rm;
  const { record: rec, image, dir } = await createContainer(store, { ref: o.ref, kind: 'run', name: o.name, keep, owner: o.owner });
  trace('run: container created');
  let mounted: MountedRootfs | undefined;
  try {
    mounted = await mountRootfs(store, rec, image, o);
    trace(`run: rootfs mounted (${mounted.mode})`);
    const { spec } = await buildSpec(rec, image, o, o.hostEnv);
    trace('run: spec built');
    await writeFile(join(dir, 'config.json'), JSON.stringify(spec, null, 2) + '\n');
    const runtimeRoot = join(dir, 'runtime');
    await mkdir(runtimeRoot, { mode: 0o700 });
    rec.phase = 'running';
    rec.runtime = runtime;
    rec.runtimeRoot = runtimeRoot;
    await writeRecord(store, rec);
    return { rec, dir, mounted, runtime, runtimeRoot };
  } catch (e) {
    await finishContainer(store, rec, mounted);
    throw e;
  }
}

/** Create, mount, start and wait for a container; remove what it used when it exits (see the
 * file comment). SIGINT, SIGTERM and SIGHUP of this process are passed to the runtime, which
 * passes them on to the container's process. */
export async function runContainer(store: Store, o: RunOptions): Promise<RunResult> {
  trace('run: start');
  const sig = signalForwarder();
  let p: PreparedContainer | undefined;
  try {
    p = await prepareContainer(store, o);
    const r = await startRuntime({ runtime: p.runtime, runtimeRoot: p.runtimeRoot, dir: p.dir, id: p.rec.id }, { stdio: o.stdio, onStart: () => o.onStart?.(p!.rec), interrupted: sig.interrupted, forward: sig.forward });
    p.rec.phase = 'exited';
    p.rec.exitCode = r.exitCode;
    return { id: p.rec.id, exitCode: r.exitCode, signal: r.signal, mode: p.mounted.mode, verity: p.mounted.verity, kept: p.rec.keep };
  } finally {
    sig.dispose();
    if (p) await finishContainer(store, p.rec, p.mounted);
    trace('run: cleaned up');
  }
}

/** After a run: runtime state, mounts, and the directory unless the container is kept. */
export async function finishContainer(store: Store, rec: ContainerRecord, mounted: MountedRootfs | undefined): Promise<void> {
  const { removeContainer } = await import('./cleanup.js');
  if (mounted) {
    await deleteRuntimeState(rec);
    await mounted.release();
  }
  await removeContainer(store, rec.id, { keepDir: rec.keep, record: rec });
}

/** `runtime delete --force` of the container, when a runtime was started (best effort). */
export async function deleteRuntimeState(rec: ContainerRecord): Promise<void> {
  if (!rec.runtime || !rec.runtimeRoot) return;
  const exists = await stat(join(rec.runtimeRoot, rec.id)).then(() => true, () => false);
  if (!exists) return;
  const { runTool } = await import('../mount/compat.js');
  await runTool(rec.runtime, ['--root', rec.runtimeRoot, 'delete', '--force', rec.id], { timeoutMs: 10_000 }).catch(() => undefined);
}

/** Is the container's owner gone (and so the container stale, unless kept)? */
export function ownerGone(rec: ContainerRecord): boolean {
  return !isAlive(rec.owner);
}

/** Move a finished kept container's record to `exited`. */
export async function markExited(store: Store, rec: ContainerRecord): Promise<void> {
  rec.phase = 'exited';
  await writeRecord(store, rec);
}
