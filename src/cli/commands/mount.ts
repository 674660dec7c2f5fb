import type { Command } from 'commander';
import { fileURLToPath } from 'node:url';
import { globals, info, outJson } from '../context.js';
import type { GlobalOptions } from '../context.js';
import { UsageError } from '../../errors.js';
import { addTransportOptions } from '../transport-options.js';
import type { TransportCliOptions } from '../../client/transport.js';

interface MountOpts extends TransportCliOptions {
  fuse?: boolean;
  kernel?: boolean;
  verity: boolean;
  requireSignature?: boolean;
  remote?: string;
  foreground?: boolean;
}

/** The CLI entry point, for re-running this command as a FUSE daemon. */
const BIN = fileURLToPath(new URL('../../../../bin/cfsdist', import.meta.url));

/** Registers `mount NAME:TAG|IMAGE MOUNTPOINT` and `umount MOUNTPOINT`. */
export function register(program: Command): void {
  const mount = program
    .command('mount')
    .description(
      'mount an image: kernel EROFS + overlayfs over the store objects (root), or a verifying userspace (FUSE) mount' +
        ' (--fuse; the default without root, erofs or overlayfs)',
    )
    .argument('<image>', 'NAME[:TAG], image digest, or an image file')
    .argument('<mountpoint>', 'an existing directory')
    .option('--fuse', 'userspace mount: every read is verified against the image digests; runs as a daemon')
    .option('--kernel', 'kernel mount only (fail rather than fall back to FUSE)')
    .option('--no-verity', 'kernel mount where fs-verity is unavailable: object contents are then NOT verified')
    .option('--require-signature', 'kernel mount: refuse an image the kernel has not accepted with its fs-verity builtin signature (implied by fs.verity.require_signatures=1)')
    .option('--remote <url>', 'FUSE: fetch missing objects on first access from a cfsdist server (http://HOST:PORT) or another store directory')
    .option('--foreground', 'FUSE: serve in this process until unmounted instead of daemonizing');
  addTransportOptions(mount, { registry: false });
  mount.action(async (ref: string, mountpoint: string, opts: MountOpts, cmd: Command) => {
      const g = globals(cmd);
      const m = await import('../../mount/index.js');
      const { Store } = await import('../../store/store.js');
      const store = await Store.open(g.store);
      const img = await m.resolveImageRef(store, ref);
      if (img.digest) {
        const { parseRef } = await import('../../store/names.js');
        const meta = await Promise.resolve()
          .then(() => parseRef(ref))
          .then(({ name, tag }) => store.getTagRecord(name, tag))
          .then((r) => r?.meta, () => undefined);
        if (meta?.unsignedFrom) info(g, `cfsdist: ${ref} is UNSIGNED: built locally from ${meta.unsignedFrom}`);
      }
      const mp = m.canonicalMountpoint(mountpoint);
      if (opts.fuse && opts.kernel) throw new UsageError('--fuse and --kernel exclude each other');
      let fuse = Boolean(opts.fuse || opts.remote || opts.foreground);
      if (opts.kernel && fuse) throw new UsageError('--remote and --foreground apply to FUSE mounts; they cannot be used with --kernel');
      if (!fuse) {
        const why = m.kernelMountUnavailable();
        if (why && opts.kernel) throw new m.MountError('NO_KERNEL_MOUNT', `cannot use the kernel mount: ${why}`);
        if (why) {
          info(g, `cfsdist: ${why}: using the userspace (FUSE) mount`);
          fuse = true;
        }
      }
      if (!fuse) return mountKernel(g, m, store, img, mp, opts);
      const noFuse = m.fuseUnavailable();
      if (noFuse) throw new m.MountError('NO_FUSE', `cannot mount ${ref} with FUSE: ${noFuse}`);
      if (opts.foreground) return serveFuse(g, m, store, img, mp, opts);
      return daemonize(g, img.ref, mp, opts, m);
    });

  program
    .command('umount')
    .description('unmount a cfsdist mount and remove everything it used (staging mounts, loop devices, FUSE daemon)')
    .argument('<mountpoint>')
    .option('--lazy', 'detach a busy mount now, clean up when it is no longer used')
    .action(async (mountpoint: string, opts: { lazy?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const m = await import('../../mount/index.js');
      const mp = m.canonicalMountpoint(mountpoint);
      const r = await m.unmount(mp, { lazy: Boolean(opts.lazy) });
      // The rootfs of a `cfsdist bundle`: its container (writable layer) goes with it.
      const { Store } = await import('../../store/store.js');
      const store = await Store.open(g.store).catch(() => undefined);
      const { bundleAt, removeContainer } = await import('../../run/cleanup.js');
      const b = store && (await bundleAt(store, mp));
      if (store && b) await removeContainer(store, b.id, { record: b });
      if (g.json) return outJson(r);
      const extra = [
        r.unmounted.length > 1 ? `also unmounted ${r.unmounted.slice(1).join(', ')}` : '',
        r.loops.length ? `detached ${r.loops.join(', ')}` : '',
        r.killed ? `stopped FUSE daemon ${r.killed}` : '',
        r.unmounted.length === 0 ? 'was not mounted any more; cleaned up its record' : '',
      ].filter(Boolean);
      info(g, `unmounted ${r.mountpoint}${extra.length ? ` (${extra.join('; ')})` : ''}`);
    });
}

type MountModule = typeof import('../../mount/index.js');
type StoreT = import('../../store/store.js').Store;
type Resolved = import('../../mount/index.js').ResolvedImage;

async function mountKernel(g: GlobalOptions, m: MountModule, store: StoreT, img: Resolved, mp: string, opts: MountOpts): Promise<void> {
  const verity = await store.objects.verity.probe();
  if (!verity && opts.verity) {
    throw new m.MountError(
      'NO_VERITY',
      `${(store.objects.verity.message || `fs-verity is not available for ${store.objects.dir}`).replace(/; objects are stored without it$/, '')}. ` +
        'Without it the kernel does not check object contents against the digests in the image: an object changed ' +
        'on disk would be read as it is. Mount with --no-verity to accept that, or with --fuse (verifies every read).',
    );
  }
  const checked = await m.checkImage(img, store, { verity, requireSignature: opts.requireSignature });
  const pauseAt = process.env.CFSDIST_MOUNT_PAUSE;
  const how = await m.mountKernel({
    image: img.path,
    objects: store.objects.dir,
    mountpoint: mp,
    verity,
    ref: img.ref,
    imageDigest: img.digest?.toString('hex'),
    force: m.compatFromEnv(),
    pause: pauseAt
      ? async (step) => {
          if (step !== pauseAt) return;
          process.stderr.write(`cfsdist: paused at ${step} (CFSDIST_MOUNT_PAUSE)\n`);
          await new Promise(() => setInterval(() => undefined, 1 << 30));
        }
      : undefined,
  });
  if (g.json) return outJson({ mountpoint: mp, image: img.path, mode: 'kernel', imageCheck: checked.by, imageSigned: checked.signed, ...how });
  info(
    g,
    `mounted ${img.ref} at ${mp} (erofs on ${how.erofs === 'file' ? 'the image file' : 'a loop device'}, overlayfs with the objects as data-only layer` +
      ` via ${how.layers}, ${how.api}; ${verity ? 'verity=require' : 'NO fs-verity: object contents are not verified'}` +
      `; image digest ${checked.by === 'kernel' ? `measured by the kernel${checked.signed ? ', fs-verity signature accepted' : ''}` : 'checked'})`,
  );
}

async function serveFuse(g: GlobalOptions, m: MountModule, store: StoreT, img: Resolved, mp: string, opts: MountOpts): Promise<void> {
  const { transportFromCli } = await import('../../client/transport.js');
  const fetcher = opts.remote ? await m.openRemote(opts.remote, store, transportFromCli(opts)) : undefined;
  const fm = await m.mountFuse({
    image: img.path,
    imageDigest: img.digest,
    objects: store.objects.dir,
    mountpoint: mp,
    fetcher,
    ref: img.ref,
    force: m.compatFromEnv(),
    logFile: process.env.CFSDIST_MOUNT_LOG,
  });
  const stop = (): void => {
    fm.unmount().catch((e: Error) => process.stderr.write(`cfsdist: ${e.message}\n`));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', stop);
  if (process.env.CFSDIST_MOUNT_NOTIFY === '1') process.stdout.write(`ready ${process.pid}\n`);
  else if (g.json) outJson({ mountpoint: mp, image: img.path, mode: 'fuse', pid: process.pid, api: fm.api });
  else info(g, `mounted ${img.ref} at ${mp} (FUSE, verified reads${opts.remote ? `, lazy pull from ${opts.remote}` : ''}); serving until unmounted`);
  let s: Awaited<typeof fm.done>;
  try {
    s = await fm.done;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    process.off('SIGHUP', stop);
    fetcher?.close?.();
  }
  process.stderr.write(`cfsdist: ${mp} unmounted; ${s.verified} objects verified (${s.hashedBytes} bytes), ${s.fetched} fetched, ${s.corrupt} integrity failures\n`);
}

/** Start `mount --fuse --foreground` detached, wait until it reports the mount live. */
async function daemonize(g: GlobalOptions, ref: string, mp: string, opts: MountOpts, m: MountModule): Promise<void> {
  const { spawn } = await import('node:child_process');
  const { mkdirSync, openSync, closeSync, readFileSync } = await import('node:fs');
  const { dirname } = await import('node:path');
  const state = await import('../../mount/state.js');
  const logFile = state.logPath(mp);
  mkdirSync(dirname(logFile), { recursive: true, mode: 0o700 });
  const logFd = openSync(logFile, 'a', 0o600);
  const args = [BIN, 'mount', ref, mp, '--fuse', '--foreground', '--store', g.store];
  if (opts.remote) args.push('--remote', opts.remote);
  for (const f of opts.caFile ?? []) args.push('--ca-file', f);
  if (opts.tlsVerify !== undefined) args.push('--tls-verify', String(opts.tlsVerify));
  if (g.debug) args.push('--debug');
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'pipe', logFd],
    env: { ...process.env, CFSDIST_MOUNT_NOTIFY: '1', CFSDIST_MOUNT_LOG: logFile, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8' },
  });
  closeSync(logFd);
  const ready = await new Promise<boolean>((resolve) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) resolve(buf.startsWith('ready'));
    });
    child.on('exit', () => resolve(false));
    child.on('error', () => resolve(false));
  });
  if (!ready) {
    const text = readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join('\n');
    throw new m.MountError('FUSE_FAILED', `the FUSE daemon for ${mp} did not start: ${text || 'no output'} (log: ${logFile})`);
  }
  child.stdout!.destroy();
  child.unref();
  if (g.json) return outJson({ mountpoint: mp, mode: 'fuse', pid: child.pid, log: logFile });
  info(g, `mounted ${ref} at ${mp} (FUSE daemon pid ${child.pid}, verified reads${opts.remote ? `, lazy pull from ${opts.remote}` : ''}; log ${logFile})`);
}
