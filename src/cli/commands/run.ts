import type { Command } from 'commander';
import { globals, info, out, outJson } from '../context.js';
import { UsageError } from '../../errors.js';

interface RunOpts {
  rm?: boolean;
  name?: string;
  env: string[];
  entrypoint?: string;
  user?: string;
  workdir?: string;
  readOnly?: boolean;
  runtime?: string;
  fuse?: boolean;
  verity: boolean;
}

/** Failures of cfsdist itself (not of the container) exit 125, as docker and podman do. */
function exit125(e: unknown): never {
  if (e && typeof e === 'object' && !('exitCode' in e)) Object.assign(e, { exitCode: 125 });
  throw e;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/** Registers `run`, `bundle`, `inspect` and `container ls|rm`. */
export function register(program: Command): void {
  program
    .command('run')
    .description(
      'run a container from an image of the store with an OCI runtime (runc): the image mounted read-only ' +
        '(kernel EROFS + overlayfs, or FUSE) with a writable layer of its own, its config (Entrypoint, Cmd, Env, User, ' +
        'WorkingDir) applied as docker/podman do. Host networking: no network namespace is set up. The exit status is ' +
        "the container's; SIGINT/SIGTERM are passed to it; on exit everything it used is removed (kept with --name and no --rm)",
    )
    .argument('<image>', 'NAME[:TAG] or image digest')
    .argument('[command...]', 'command and arguments (replace the image Cmd)')
    .option('--rm', 'remove the container on exit even when named')
    .option('--name <name>', 'container name (also its hostname); a named container is kept after exit unless --rm')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable over the image Env (KEY alone: take it from this environment); repeatable', collect, [])
    .option('--entrypoint <cmd>', 'replace the image Entrypoint (the image Cmd is dropped too); "" for none')
    .option('-u, --user <user[:group]>', 'user (name or uid) and group, resolved in the image /etc/passwd and /etc/group')
    .option('-w, --workdir <dir>', 'working directory (absolute; created if missing)')
    .option('--read-only', 'mount the root filesystem read-only in the container')
    .option('--runtime <path>', 'OCI runtime executable', 'runc')
    .option('--fuse', 'userspace mount of the image (every read verified), also the default where the kernel mount is unavailable')
    .option('--no-verity', 'kernel mount where fs-verity is unavailable: object contents are then NOT verified on read')
    .option('--no-daemon', 'prepare the container in this process even when a cfsdist daemon serves the store')
    .passThroughOptions()
    .action(async (ref: string, command: string[], opts: RunOpts & { daemon?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      // A running `cfsdist daemon` prepares and removes the container (warm code); this
      // process still runs the runtime with its stdio, signals and exit status.
      const { daemonFor } = await import('../../daemon/client.js');
      const d = opts.daemon === false ? undefined : await daemonFor(g.store);
      const go = async (o: import('../../run/container.js').RunOptions): Promise<import('../../run/container.js').RunResult> => {
        if (d) return d.run(g.store, o);
        const { Store } = await import('../../store/store.js');
        const { runContainer } = await import('../../run/container.js');
        return runContainer(await Store.open(g.store), o);
      };
      const r = await go({
        ref,
        command,
        name: opts.name,
        rm: opts.rm,
        env: opts.env,
        entrypoint: opts.entrypoint,
        user: opts.user,
        workdir: opts.workdir,
        readOnly: opts.readOnly,
        runtime: opts.runtime,
        fuse: opts.fuse,
        verity: opts.verity,
        log: (l) => info(g, l),
      }).catch(exit125);
      if (g.debug) process.stderr.write(`cfsdist: container ${r.id} exited ${r.exitCode} (${r.mode} mount${r.kept ? ', kept' : ''})\n`);
      process.exitCode = r.exitCode;
    });

  program
    .command('bundle')
    .description('write an OCI runtime bundle: DIR/config.json from the image config and DIR/rootfs mounted (image + writable layer), as umoci unpack does; cfsdist umount DIR/rootfs removes it')
    .argument('<image>', 'NAME[:TAG] or image digest')
    .argument('<dir>', 'bundle directory (created; must be empty)')
    .argument('[command...]', 'command and arguments (replace the image Cmd)')
    .option('-e, --env <KEY=VALUE>', 'environment over the image Env; repeatable', collect, [])
    .option('--entrypoint <cmd>', 'replace the image Entrypoint (and Cmd)')
    .option('-u, --user <user[:group]>', 'user and group')
    .option('-w, --workdir <dir>', 'working directory')
    .option('--read-only', 'read-only root filesystem in the spec')
    .option('--no-verity', 'kernel mount without fs-verity')
    .action(async (ref: string, dir: string, command: string[], opts: RunOpts, cmd: Command) => {
      const g = globals(cmd);
      const { Store } = await import('../../store/store.js');
      const { makeBundle } = await import('../../run/bundle.js');
      const store = await Store.open(g.store);
      const r = await makeBundle(store, { ref, dir, command, env: opts.env, entrypoint: opts.entrypoint, user: opts.user, workdir: opts.workdir, readOnly: opts.readOnly, verity: opts.verity });
      if (g.json) return outJson(r);
      info(g, `bundle ${r.dir}: config.json written, rootfs mounted (${r.mode}${r.verity ? ', verity' : ', NO fs-verity'}); run it with: runc run --bundle ${r.dir} ID; remove it with: cfsdist umount ${r.rootfs}`);
    });

  program
    .command('inspect')
    .description('show an image: digest, signature, platform, source manifest, config (entrypoint, cmd, env, user, workdir, labels, stop signal), entries, objects, bytes')
    .argument('<image>', 'NAME[:TAG] or image digest')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { Store } = await import('../../store/store.js');
      const { inspectImage, inspectLines } = await import('../../run/inspect.js');
      const store = await Store.open(g.store);
      const r = await inspectImage(store, ref);
      if (g.json) return outJson(r);
      for (const l of inspectLines(r)) out(l);
    });

  const container = program.command('container').description('containers kept by run --name (without --rm), bundles, and ones left by a killed run');
  container
    .command('ls')
    .description('list containers: ID  IMAGE  KIND  STATE')
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { Store } = await import('../../store/store.js');
      const { listContainerIds, readRecord } = await import('../../run/container.js');
      const { isAlive } = await import('../../store/procid.js');
      const store = await Store.open(g.store);
      const rows = [];
      for (const id of await listContainerIds(store)) {
        const r = await readRecord(store, id);
        if (!r) continue;
        const state = r.phase === 'exited' ? `exited (${r.exitCode ?? '?'})` : r.kind === 'run' && !isAlive(r.owner) ? 'stale' : r.phase;
        rows.push({ id, ref: r.ref, image: r.image, kind: r.kind, state, rootfs: r.rootfs, created: r.created });
      }
      if (g.json) return outJson(rows);
      for (const r of rows) out(`${r.id}\t${r.ref}\t${r.image.slice(0, 12)}\t${r.kind}\t${r.state}`);
    });
  container
    .command('rm')
    .description('remove containers (a running one only with --force: its runtime state is deleted, its process killed)')
    .argument('<id...>')
    .option('--force', 'also a running container')
    .action(async (ids: string[], opts: { force?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const { Store } = await import('../../store/store.js');
      const { readRecord, ownerGone, containerDir } = await import('../../run/container.js');
      const { removeContainer } = await import('../../run/cleanup.js');
      const { existsSync } = await import('node:fs');
      const store = await Store.open(g.store);
      for (const id of ids) {
        const r = await readRecord(store, id);
        if (!r && !existsSync(containerDir(store, id))) throw new UsageError(`no container ${id}`);
        if (r && r.kind === 'run' && r.phase !== 'exited' && !ownerGone(r) && !opts.force) throw new UsageError(`container ${id} is running (pid ${r.owner.split('-')[0]}); use --force`);
        if (r && r.kind === 'run' && r.phase !== 'exited' && !ownerGone(r)) {
          // Stop it through its runtime; the owning run then exits and cleans up too.
          const { deleteRuntimeState } = await import('../../run/container.js');
          await deleteRuntimeState(r);
        }
        await removeContainer(store, id, { keepDir: false });
        info(g, `removed container ${id}`);
      }
    });
}
