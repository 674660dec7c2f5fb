import type { Command } from 'commander';
import { globals, info, out, outJson } from '../context.js';
import { humanBytes } from '../../client/progress.js';
import { UsageError } from '../../errors.js';

async function openStore(dir: string) {
  const { Store } = await import('../../store/store.js');
  return Store.open(dir);
}

/** Registers the store commands: `images`, `tag`, `rm`, `fsck [--repair]`, `gc [--dry-run]`. */
export function register(program: Command): void {
  program
    .command('images')
    .description('list tagged images: NAME:TAG  DIGEST  OBJECTS')
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const store = await openStore(g.store);
      const tags = await store.listTags();
      const rows: { name: string; tag: string; image: string; objects: number | null; config: string | null; platform: string | null; manifest: string | null }[] = [];
      for (const t of tags) {
        let objects: number | null = null;
        try {
          objects = (await store.imageObjects(t.image)).length;
        } catch {
          objects = null; // missing image or object list: fsck reports it
        }
        rows.push({ name: t.name, tag: t.tag, image: t.image.toString('hex'), objects, config: t.meta.config ?? null, platform: t.meta.platform ?? null, manifest: t.meta.manifest ?? null });
      }
      if (g.json) return outJson(rows);
      for (const r of rows) out(`${r.name}:${r.tag}  ${r.image}  ${r.objects === null ? 'missing' : `${r.objects} objects`}`);
    });

  program
    .command('tag')
    .description('give an image another NAME:TAG (SRC: NAME[:TAG] or an image digest); the config and source facts go along')
    .argument('<src>')
    .argument('<dst>', 'NAME[:TAG]')
    .action(async (src: string, dst: string, _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const store = await openStore(g.store);
      const { parseRef } = await import('../../store/names.js');
      const { resolveImage } = await import('../../run/container.js');
      const to = parseRef(dst);
      const r = await store.withLease(async () => {
        const img = await resolveImage(store, src);
        await store.setTag(to.name, to.tag, img.digest, img.meta);
        return img;
      });
      if (g.json) return outJson({ tag: `${to.name}:${to.tag}`, image: r.digest.toString('hex'), config: r.meta.config ?? null });
      info(g, `tagged ${to.name}:${to.tag} → ${r.digest.toString('hex')}`);
    });

  program
    .command('rm')
    .description('remove tags (the images stay until cfsdist gc finds nothing else uses them; signed-version records stay, so an older version is still refused)')
    .argument('<ref...>', 'NAME[:TAG]')
    .action(async (refs: string[], _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const store = await openStore(g.store);
      const { parseRef } = await import('../../store/names.js');
      const done: { tag: string; image: string }[] = [];
      for (const ref of refs) {
        const { name, tag } = parseRef(ref);
        const image = await store.getTag(name, tag);
        if (!image || !(await store.deleteTag(name, tag))) throw new UsageError(`no image tagged ${name}:${tag} in the store ${store.dir}`);
        done.push({ tag: `${name}:${tag}`, image: image.toString('hex') });
        if (!g.json) info(g, `untagged ${name}:${tag} (image ${image.toString('hex')}; cfsdist gc frees what nothing else uses)`);
      }
      if (g.json) outJson(done);
    });

  program
    .command('fsck')
    .description('recompute every object and image digest; report corrupt or missing data and leftovers')
    .option('--repair', 'quarantine corrupt objects/images, delete stale temporary files and orphan object lists')
    .action(async (opts: { repair?: boolean }, cmd: Command) => {
      const g = globals(cmd);
      const store = await openStore(g.store);
      const r = await store.fsck({
        repair: Boolean(opts.repair),
        onProgress: g.quiet || g.json || !process.stderr.isTTY ? undefined : (p) => process.stderr.write(`\rfsck: ${p.phase} ${p.done}/${p.total}`),
      });
      if (!g.quiet && !g.json && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
      if (!process.exitCode && !r.ok) process.exitCode = 1;
      if (g.json) return outJson(r);
      for (const c of r.corruptObjects) out(`corrupt object ${c.hex}: content digest ${c.actual ?? 'unreadable'}${c.quarantined ? ` (moved to ${c.quarantined})` : ''}`);
      for (const c of r.corruptImages) out(`corrupt image ${c.hex}: content digest ${c.actual ?? 'unreadable'}${c.quarantined ? ` (moved to ${c.quarantined})` : ''}`);
      for (const i of r.imagesWithoutObjectList) out(`image ${i}: no object list`);
      for (const m of r.imagesMissingObjects) out(`image ${m.image}: ${m.missing.length} missing object(s): ${m.missing.slice(0, 5).join(' ')}${m.missing.length > 5 ? ' …' : ''}`);
      for (const t of r.danglingTags) out(`tag ${t.name}:${t.tag}: image ${t.image} is missing`);
      for (const b of r.badTags) out(`bad tag file ${b.path}: ${b.message}`);
      for (const t of r.tempFiles) if (t.stale) out(`leftover temporary file ${t.path}${t.removed ? ' (removed)' : ''}`);
      for (const s of r.orphanSidecars) out(`orphan object list ${s.path}${s.removed ? ' (removed)' : ''}`);
      for (const s of r.strays) out(`stray file ${s}`);
      for (const k of r.kernel.withoutVerity) out(`${k.kind} ${k.hex}: no fs-verity (a verity=require mount gives EIO on it)${k.enabled ? ' (fs-verity enabled now)' : ''}`);
      for (const k of r.kernel.mismatched) out(`${k.kind} ${k.hex}: the kernel measures fs-verity digest ${k.measured}`);
      if (!r.verity.supported) info(g, r.verity.message);
      else info(g, `fsck: fs-verity: ${r.kernel.measured} files measured by the kernel`);
      const running = r.tempFiles.filter((t) => !t.stale).length;
      info(
        g,
        `fsck: ${r.objects} objects (${humanBytes(r.objectBytes)}), ${r.images} images: ${r.ok ? 'ok' : 'PROBLEMS FOUND'}` +
          `${running ? `; ${running} write(s) in progress` : ''}`,
      );
    });

  program
    .command('gc')
    .description('delete images no tag reaches and objects no kept image needs')
    .option('--dry-run', 'only print what would be deleted')
    .option('--grace <seconds>', 'keep untagged data younger than this (default 900)')
    .action(async (opts: { dryRun?: boolean; grace?: string }, cmd: Command) => {
      const g = globals(cmd);
      let graceSeconds: number | undefined;
      if (opts.grace !== undefined) {
        graceSeconds = Number(opts.grace);
        if (!Number.isFinite(graceSeconds) || graceSeconds < 0) throw new UsageError(`gc: --grace must be a number of seconds, got ${JSON.stringify(opts.grace)}`);
      }
      const store = await openStore(g.store);
      const r = await store.gc({ dryRun: Boolean(opts.dryRun), graceSeconds });
      if (g.json) return outJson(r);
      const verb = r.dryRun ? 'would remove' : 'removed';
      if (!g.quiet) {
        for (const i of r.removedImages) out(`${verb} image ${i}`);
      }
      out(
        `gc: ${verb} ${r.removedImages.length} image(s), ${r.removedObjects.length} object(s), ` +
          `${r.removedTempFiles.length + r.removedSidecars.length} leftover file(s); ${r.dryRun ? 'would free' : 'freed'} ${humanBytes(r.freedBytes)}`,
      );
      if (r.youngImages || r.youngObjects) {
        info(g, `gc: kept ${r.youngImages} untagged image(s) and ${r.youngObjects} object(s) younger than ${r.graceSeconds} s (--grace)`);
      }
    });
}
