/**
 * `cfsdist info ls|dump|objects|missing-objects|measure IMAGE…`: inspect composefs images with
 * output compatible with C `composefs-info` (minus its redirect off-by-one). IMAGE is a file,
 * or a NAME[:TAG] / image digest in the store.
 */
import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import type { Inode } from '../../tree/tree.js';
import { globals, outJson, type GlobalOptions } from '../context.js';

/** Write bytes to stdout, waiting when the pipe is full. */
function writeOut(b: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(b)) resolve();
    else process.stdout.once('drain', resolve);
  });
}

/** Write latin1 lines to stdout in ~1 MiB batches. */
async function writeLines(lines: Iterable<string>): Promise<void> {
  let parts: string[] = [];
  let n = 0;
  for (const l of lines) {
    parts.push(l);
    n += l.length;
    if (n >= 1 << 20) {
      await writeOut(Buffer.from(parts.join(''), 'latin1'));
      parts = [];
      n = 0;
    }
  }
  if (n > 0) await writeOut(Buffer.from(parts.join(''), 'latin1'));
}

/** A closed pipe (`| head`) ends the listing quietly instead of with an error. */
function quietEpipe(): void {
  if (process.stdout.listenerCount('error') > 0) return;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

/** IMAGE → file path: an existing file, else a NAME[:TAG] or digest in the store. */
async function resolveImagePath(ref: string, g: GlobalOptions): Promise<string> {
  if (existsSync(ref) && statSync(ref).isFile()) return ref;
  const { CfsError } = await import('../../errors.js');
  if (!existsSync(join(g.store, 'objects'))) {
    throw new CfsError('IMAGE_NOT_FOUND', `${ref}: no such image file (and no cfsdist store at ${g.store} to look it up in)`);
  }
  const { Store } = await import('../../store/store.js');
  const store = await Store.open(g.store);
  return store.imagePath(await store.resolveImage(ref));
}

/** Read every IMAGE argument into a Tree (one at a time, in order). */
async function* trees(refs: string[], g: GlobalOptions): AsyncGenerator<[string, Inode]> {
  const { ErofsImage } = await import('../../erofs/reader.js');
  for (const ref of refs) {
    const path = await resolveImagePath(ref, g);
    yield [ref, ErofsImage.open(path).toTree()];
  }
}

const OBJECT_PATH = /^[0-9a-f]{2}\/[0-9a-f]{62}$/;

/**
 * A presence check for backing objects: digest-shaped paths go through the store's object
 * directory (`--store`), others (and `--basedir`) are looked up as files under the objects
 * directory, never outside it.
 */
async function objectChecker(g: GlobalOptions, basedir: string | undefined): Promise<(payload: Buffer) => Promise<boolean>> {
  let dir: string;
  let has: ((digest: Buffer) => Promise<boolean>) | undefined;
  if (basedir !== undefined) {
    dir = basedir;
  } else {
    const { Store } = await import('../../store/store.js');
    const store = await Store.open(g.store);
    dir = store.objects.dir;
    has = (d) => store.objects.has(d);
  }
  const root = normalize(dir + sep);
  return async (payload) => {
    const p = payload.toString('latin1');
    if (has && OBJECT_PATH.test(p)) return has(Buffer.from(p.slice(0, 2) + p.slice(3), 'hex'));
    if (isAbsolute(p)) return false;
    const full = normalize(join(dir, Buffer.from(p, 'latin1').toString()));
    if (!full.startsWith(root)) return false;
    try {
      return (await stat(full)).isFile();
    } catch {
      return false;
    }
  };
}

/** Registers the `info` command group. */
export function register(program: Command): void {
  const info = program.command('info').description('inspect composefs images (output compatible with composefs-info)');

  info
    .command('ls')
    .description('list every path (directories end in "/", symlinks "-> TARGET", backed files "@ OBJECT")')
    .argument('<image...>', 'image file, NAME[:TAG] or image digest')
    .action(async (images: string[], _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      quietEpipe();
      const { lsEntries, lsLines } = await import('../../erofs/reader-listing.js');
      const { escapeField } = await import('../../dumpfile/escape.js');
      const { fileTypeOf } = await import('../../tree/tree.js');
      const json: unknown[] = [];
      for await (const [ref, root] of trees(images, g)) {
        if (!g.json) {
          await writeLines(lsLines(root));
          continue;
        }
        for (const e of lsEntries(root)) {
          const row: Record<string, unknown> = { image: ref, path: escapeField(e.path, false, false), type: fileTypeOf(e.inode.mode) };
          if (e.linkTo) row.linkTo = escapeField(e.linkTo, false, false);
          else if (e.inode.target) row.target = escapeField(e.inode.target, false, false);
          else if (e.inode.payload) row.object = escapeField(e.inode.payload, false, false);
          json.push(row);
        }
      }
      if (g.json) outJson(json);
    });

  info
    .command('dump')
    .description('print the image as a composefs dumpfile (canonical form)')
    .argument('<image...>', 'image file, NAME[:TAG] or image digest')
    .action(async (images: string[], _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      quietEpipe();
      const { dumpfileChunks } = await import('../../dumpfile/writer.js');
      for await (const [, root] of trees(images, g)) for (const chunk of dumpfileChunks(root)) await writeOut(chunk);
    });

  info
    .command('objects')
    .description('list the backing objects the images need (sorted, unique)')
    .argument('<image...>', 'image file, NAME[:TAG] or image digest')
    .action(async (images: string[], _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      quietEpipe();
      const { collectObjects } = await import('../../erofs/reader-listing.js');
      const all = new Map<string, Buffer>();
      for await (const [, root] of trees(images, g)) collectObjects(root, all);
      const keys = [...all.keys()].sort();
      if (g.json) outJson(keys.map((k) => Buffer.from(k, 'latin1').toString()));
      else await writeLines(keys.map((k) => k + '\n'));
    });

  info
    .command('missing-objects')
    .description('list the backing objects the images need that the store (or --basedir) lacks')
    .argument('<image...>', 'image file, NAME[:TAG] or image digest')
    .option('--basedir <dir>', 'objects directory to check instead of STORE/objects (composefs-info style)')
    .action(async (images: string[], o: { basedir?: string }, cmd: Command) => {
      const g = globals(cmd);
      quietEpipe();
      const { collectObjects } = await import('../../erofs/reader-listing.js');
      const all = new Map<string, Buffer>();
      for await (const [, root] of trees(images, g)) collectObjects(root, all);
      const present = await objectChecker(g, o.basedir);
      const keys = [...all.keys()].sort();
      const missing: string[] = [];
      const BATCH = 64;
      for (let i = 0; i < keys.length; i += BATCH) {
        const part = keys.slice(i, i + BATCH);
        const ok = await Promise.all(part.map((k) => present(all.get(k)!)));
        part.forEach((k, j) => {
          if (!ok[j]) missing.push(k);
        });
      }
      if (g.json) outJson({ needed: keys.length, missing: missing.map((k) => Buffer.from(k, 'latin1').toString()) });
      else await writeLines(missing.map((k) => k + '\n'));
    });

  info
    .command('measure')
    .description("print each image's fs-verity digest (hex)")
    .argument('<image...>', 'image file, NAME[:TAG] or image digest')
    .action(async (images: string[], _o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { fsverityDigestFile, toHex } = await import('../../verity/digest.js');
      const rows: { image: string; digest: string }[] = [];
      for (const ref of images) {
        const path = await resolveImagePath(ref, g);
        rows.push({ image: ref, digest: toHex(await fsverityDigestFile(path)) });
      }
      if (g.json) outJson(rows);
      else await writeLines(rows.map((r) => r.digest + '\n'));
    });
}
