import type { Command } from 'commander';
import { globals, inlineMaxArg, out, outJson } from '../context.js';
import { UsageError } from '../../errors.js';

interface MkOptions {
  fromFile?: boolean;
  digestStore?: string;
  inlineMax?: string;
  minVersion?: string;
  maxVersion?: string;
  printDigest?: boolean;
}

function versionArg(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`${flag} takes a number, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** Registers `cfsdist mkcomposefs`. */
export function register(program: Command): void {
  program
    .command('mkcomposefs')
    .description('build a composefs image from a dumpfile (--from-file, "-" for stdin) or a directory')
    .argument('<src>', 'dumpfile (with --from-file) or directory')
    .argument('<out>', 'output image file ("-" for stdout)')
    .option('--from-file', 'SRC is a composefs dumpfile')
    .option('--digest-store <dir>', 'copy regular files into DIR/xx/… by fs-verity digest (directory sources)')
    .option('--inline-max <bytes>', 'directory sources: inline regular files of at most this size (default 64, as C mkcomposefs; imports use 4096)')
    .option('--min-version <n>', 'minimum composefs format version (default 0)')
    .option('--max-version <n>', 'maximum composefs format version (default 1)')
    .option('--print-digest', "print the image's fs-verity digest")
    .action(async (src: string, outPath: string, o: MkOptions, cmd: Command) => {
      const g = globals(cmd);
      const { buildImage } = await import('../../mkcomposefs.js');
      const res = await buildImage({
        source: src,
        fromFile: Boolean(o.fromFile),
        out: outPath,
        digestStore: o.digestStore,
        inlineMax: inlineMaxArg(o.inlineMax),
        minVersion: versionArg(o.minVersion, '--min-version'),
        maxVersion: versionArg(o.maxVersion, '--max-version'),
        strict: Boolean(process.env.CFS_PARSE_STRICT),
        wantDigest: Boolean(o.printDigest) || g.json,
      });
      if (g.json) outJson({ image: outPath, size: res.size, digest: res.digest, inodes: res.inodes });
      else if (o.printDigest) out(res.digest!);
    });
}
