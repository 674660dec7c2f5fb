import type { Command } from 'commander';
import { globals, out, outJson } from '../context.js';
import { UsageError } from '../../errors.js';

/** Registers `cfsdist digest FILE…`: fs-verity digests as `HEX  FILE` lines (or --json). */
export function register(program: Command): void {
  program
    .command('digest')
    .description('print the fs-verity digest (SHA-256, 4096-byte blocks, no salt) of each FILE')
    .argument('<file...>', 'files to digest')
    .action(async (files: string[], _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      if (files.length === 0) throw new UsageError('digest: no FILE given');
      const { digestFilesSettled } = await import('../../verity/parallel.js');
      const results = await digestFilesSettled(files);
      let failed = 0;
      const json: { file: string; digest?: string; size?: number; error?: string }[] = [];
      for (const r of results) {
        if ('error' in r) {
          failed++;
          if (g.json) json.push({ file: r.path, error: r.error.message });
          else process.stderr.write(`cfsdist: digest: ${r.error.message}\n`);
          continue;
        }
        const hex = r.digest.toString('hex');
        if (g.json) json.push({ file: r.path, digest: hex, size: r.size });
        else out(`${hex}  ${r.path}`);
      }
      if (g.json) outJson(json);
      if (failed > 0) process.exitCode = 1;
    });
}
