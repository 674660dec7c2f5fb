/**
 * Step timing for finding where a command's time goes: with CFSDIST_TRACE set, `trace(step)`
 * prints the milliseconds since the process started and the step's name on stderr. Without it,
 * a call costs one property read.
 */
const ON = Boolean(process.env.CFSDIST_TRACE);

/** Print `cfsdist: <ms since process start> ms <step>` on stderr when CFSDIST_TRACE is set. */
export function trace(step: string): void {
  if (ON) process.stderr.write(`cfsdist: ${performance.now().toFixed(1)} ms ${step}\n`);
}
