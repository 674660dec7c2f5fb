/**
 * cfsdist command line: a thin shell over the library. Each command group registers itself
 * from `commands/`; heavy modules are imported inside actions so start-up stays fast.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { trace } from '../trace.js';
import { register as registerMkcomposefs } from './commands/mkcomposefs.js';
import { register as registerInfo } from './commands/info.js';
import { register as registerDigest } from './commands/digest.js';
import { register as registerStore } from './commands/store.js';
import { register as registerImport } from './commands/import.js';
import { register as registerSign } from './commands/sign.js';
import { register as registerServe } from './commands/serve.js';
import { register as registerPull } from './commands/pull.js';
import { register as registerMount } from './commands/mount.js';
import { register as registerDemo } from './commands/demo.js';
import { register as registerRun } from './commands/run.js';
import { register as registerDaemon } from './commands/daemon.js';

/** The version in package.json (read once, at start-up; the CLI runs from dist/src/cli/). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

/** Build the program with every command registered. */
export function buildProgram(): Command {
  const program = new Command('cfsdist')
    .description('container image distribution the composefs way')
    .version(packageVersion())
    .option('--store <dir>', 'store directory (default $CFSDIST_STORE, /var/lib/cfsdist as root, else ~/.local/share/cfsdist)')
    .option('--json', 'machine-readable output')
    .option('--quiet', 'no progress output')
    .option('--debug', 'print stack traces on errors')
    .enablePositionalOptions()
    .showHelpAfterError(false)
    .exitOverride();
  registerMkcomposefs(program);
  registerInfo(program);
  registerDigest(program);
  registerStore(program);
  registerImport(program);
  registerSign(program);
  registerServe(program);
  registerPull(program);
  registerMount(program);
  registerRun(program);
  registerDaemon(program);
  registerDemo(program);
  // Global flags are accepted after the subcommand as well.
  for (const cmd of program.commands) addGlobalFlags(cmd);
  return program;
}

function addGlobalFlags(cmd: Command): void {
  const have = new Set(cmd.options.map((o) => o.long));
  if (!have.has('--store')) cmd.option('--store <dir>', 'store directory');
  if (!have.has('--json')) cmd.option('--json', 'machine-readable output');
  if (!have.has('--quiet')) cmd.option('--quiet', 'no progress output');
  if (!have.has('--debug')) cmd.option('--debug', 'print stack traces on errors');
  cmd.exitOverride();
  for (const sub of cmd.commands) addGlobalFlags(sub);
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  trace('cli: modules loaded');
  // A reader that stops early (`cfsdist … | head`) is not an error: end quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw e;
  });
  const program = buildProgram();
  const debug = argv.includes('--debug');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2; // commander already printed the message
    }
    const e = err as { code?: string; message?: string; stack?: string };
    process.stderr.write(`cfsdist: ${e?.message ?? String(err)}\n`);
    if (debug && e?.stack) process.stderr.write(e.stack + '\n');
    const own = (err as { exitCode?: unknown }).exitCode;
    return typeof own === 'number' ? own : e?.code === 'USAGE' ? 2 : 1;
  }
}
