import type { Command } from 'commander';
import { globals, info, out, outJson } from '../context.js';

/** Registers `cfsdist demo`. */
export function register(program: Command): void {
  program
    .command('demo')
    .description('end-to-end run on a real Debian image family: import, sign, serve, pull v1 then v2, verify, mount')
    .option('--keep', 'keep the work directory (stores, keys) afterwards')
    .option('--fuse', 'use the userspace mount')
    .option('--cache <dir>', 'where the built image family is cached (default /var/tmp/cfsdist-cache)')
    .action(async (o: { keep?: boolean; fuse?: boolean; cache?: string }, cmd: Command) => {
      const g = globals(cmd);
      const { runDemo, formatSummary } = await import('../../demo/demo.js');
      const summary = await runDemo({ keep: o.keep, fuse: o.fuse, cacheDir: o.cache, log: (l) => info(g, l) });
      if (g.json) outJson(summary);
      else out(formatSummary(summary));
    });
}
