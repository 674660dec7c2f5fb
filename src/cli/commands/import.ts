/**
 * `cfsdist import SOURCE NAME[:TAG]` — turn a container image into one composefs image in the
 * store (src/oci/import.ts), with a progress bar on stderr (when it is a terminal and not
 * --quiet/--json) and a summary.
 */
import type { Command } from 'commander';
import { globals, info, inlineMaxArg, out, outJson } from '../context.js';
import { humanBytes } from '../../client/progress.js';
import { addTransportOptions } from '../transport-options.js';
import type { TransportCliOptions } from '../../client/transport.js';

interface ImportCliOptions extends TransportCliOptions {
  platform?: string;
  sync?: boolean;
  inlineMax?: string;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Registers `cfsdist import`. */
export function register(program: Command): void {
  const cmd0 = program
    .command('import')
    .description('import a container image into the store as one composefs image')
    .argument('<source>', 'oci:DIR[:REF] | docker-archive:FILE[:REF] | dir:PATH | docker://HOST[:PORT]/REPO[:TAG]')
    .argument('<name>', 'NAME[:TAG] to tag the image with (tag defaults to latest)')
    .option('--platform <os/arch[/variant]>', "platform to pick from a multi-platform image (default this machine's, e.g. linux/amd64)")
    .option('--inline-max <bytes>', 'store regular files of at most this size in the image, not as objects (default 4096)')
    .option('--no-sync', 'do not sync the filesystem before the image is tagged (faster, not crash-safe)');
  addTransportOptions(cmd0, { registry: true });
  cmd0.action(async (sourceSpec: string, ref: string, o: ImportCliOptions, cmd: Command) => {
      const g = globals(cmd);
      const { transportFromCli } = await import('../../client/transport.js');
      const transport = transportFromCli(o);
      const { parseRef } = await import('../../store/names.js');
      const { Store } = await import('../../store/store.js');
      const { openSource } = await import('../../oci/source.js');
      const { importImage } = await import('../../oci/import.js');
      const { name, tag } = parseRef(ref);
      const store = await Store.open(g.store, { create: true });
      const source = await openSource(sourceSpec, { platform: o.platform, transport });
      const bar = !g.quiet && !g.json && process.stderr.isTTY ? new ProgressBar() : undefined;
      let lastLayer = 0;
      try {
        const r = await importImage(source, store, {
          name,
          tag,
          sync: o.sync !== false,
          inlineMax: inlineMaxArg(o.inlineMax),
          onProgress: (p) => {
            if (bar) bar.update(p);
            else if (!g.quiet && !g.json && p.phase === 'layer' && p.layer !== lastLayer) {
              lastLayer = p.layer;
              info(g, `layer ${p.layer}/${p.layers}`);
            }
          },
        });
        bar?.clear();
        const result = { ...r, image: r.image.toString('hex') };
        if (g.json) return outJson(result);
        if (!store.objects.verity.supported && store.objects.verity.message) info(g, store.objects.verity.message);
        out(`${name}:${tag}  ${result.image}`);
        info(g, `  ${r.layers} layer${r.layers === 1 ? '' : 's'}, ${count(r.entries)} entries, ${count(r.files)} files; image ${humanBytes(r.imageSize)}`);
        info(g, `  ${count(r.inlined)} small file${r.inlined === 1 ? '' : 's'} inline in the image; objects: ${count(r.objects)} referenced; ${count(r.objectsNew)} written, ${count(r.objectsExisting)} already present (deduplicated)`);
        info(g, `  stored ${humanBytes(r.bytesStored)} of ${humanBytes(r.bytesContent)} file content in ${r.seconds.toFixed(2)} s`);
      } finally {
        bar?.clear();
      }
    });
}

/** A one-line progress bar on stderr, redrawn at most 10 times a second. */
class ProgressBar {
  private last = 0;
  private drawn = false;
  private bytes = 0;
  private totalBytes: number | undefined;

  update(p: { layer: number; layers: number; bytes: number; totalBytes?: number; entries: number; phase: string }): void {
    const now = Date.now();
    if (now - this.last < 100 && p.phase === 'layer') return;
    this.last = now;
    if (p.phase === 'layer') {
      this.bytes = p.bytes;
      this.totalBytes = p.totalBytes;
    }
    const width = 30;
    const frac = p.phase !== 'layer' ? 1 : p.totalBytes ? Math.min(1, p.bytes / p.totalBytes) : p.layers ? (p.layer - 1) / p.layers : 0;
    const filled = Math.round(frac * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const bytes = this.totalBytes ? `${humanBytes(this.bytes)}/${humanBytes(this.totalBytes)}` : humanBytes(this.bytes);
    const what = p.phase === 'layer' ? `layer ${p.layer}/${p.layers}` : p.phase;
    process.stderr.write(`\r\x1b[K[${bar}] ${Math.round(frac * 100)}% ${bytes}  ${what}  ${count(p.entries)} entries`);
    this.drawn = true;
  }

  clear(): void {
    if (this.drawn) process.stderr.write('\r\x1b[K');
    this.drawn = false;
  }
}
