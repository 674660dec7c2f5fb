/** `cfsdist daemon`: serve the store's pull and run from one long-lived process (src/daemon). */
import type { Command } from 'commander';
import { globals, info, outJson } from '../context.js';

/** Registers `daemon`. */
export function register(program: Command): void {
  program
    .command('daemon')
    .description(
      'serve this store to cfsdist pull and cfsdist run from one long-lived process on STORE/daemon.sock (mode 0600): ' +
        'commands then skip their start-up work; the client still runs the container runtime with its own stdio, signals and exit status. ' +
        'Clients whose credentials, proxy, PATH or mount variables differ from the daemon\'s do the work themselves. Runs until SIGINT/SIGTERM',
    )
    .action(async (_o: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { Store } = await import('../../store/store.js');
      const { serveDaemon } = await import('../../daemon/server.js');
      const store = await Store.open(g.store, { create: true });
      const d = await serveDaemon(store, { log: (l) => info(g, l) });
      if (g.json) outJson({ socket: d.socket, pid: process.pid, store: store.dir });
      else info(g, `cfsdist daemon: serving ${store.dir} on ${d.socket} (pid ${process.pid})`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          // A second signal ends the process at once.
          const now = (): never => process.exit(130);
          process.once('SIGINT', now);
          process.once('SIGTERM', now);
          info(g, 'cfsdist daemon: stopping (containers still running are removed as they exit)');
          void d.close().then(resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}
