/** Helpers for benchmarks: run a command and measure wall time and peak RSS. */
import { spawn } from 'node:child_process';

/** Wall time and peak resident set size of one command run. */
export interface RunFigures {
  seconds: number;
  peakRssMb: number;
  stdout: string;
}

/** Run `cmd args` under GNU time; fails if the command fails. */
export async function timed(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<RunFigures> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%M', cmd, ...args], { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const errText = Buffer.concat(err).toString();
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${errText.slice(-500)}`));
      const lines = errText.trim().split('\n');
      const kb = Number(lines[lines.length - 1]);
      resolve({ seconds, peakRssMb: kb / 1024, stdout: Buffer.concat(out).toString() });
    });
  });
}

/** The best (minimum) of `n` runs, by wall time. */
export async function best(n: number, run: () => Promise<RunFigures>): Promise<RunFigures> {
  let b: RunFigures | undefined;
  for (let i = 0; i < n; i++) {
    const r = await run();
    if (!b || r.seconds < b.seconds) b = r;
  }
  return b!;
}

/** The median (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** `n` rounds of `a` and `b`, alternating which goes first; every run's figures, in order. */
export async function alternating(n: number, a: () => Promise<RunFigures>, b: () => Promise<RunFigures>): Promise<{ a: RunFigures[]; b: RunFigures[] }> {
  const out = { a: [] as RunFigures[], b: [] as RunFigures[] };
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      out.a.push(await a());
      out.b.push(await b());
    } else {
      out.b.push(await b());
      out.a.push(await a());
    }
  }
  return out;
}

/** Median wall time and peak RSS of some runs, with every run listed (`1.23/1.31/…`). */
export function summarize(rs: RunFigures[]): { seconds: number; peakRssMb: number; runs: string } {
  return { seconds: median(rs.map((r) => r.seconds)), peakRssMb: median(rs.map((r) => r.peakRssMb)), runs: rs.map((r) => r.seconds.toFixed(3)).join('/') };
}
