/**
 * Child process for the store concurrency and crash tests (not a test itself).
 *   addmany STORE SEED COUNT        add COUNT objects of SEED (8 at a time); prints {created,existed}
 *   pull STORE SEED COUNT TAG       one pull (objects, image, tag crash:TAG under a lease)
 *   pulls STORE SEED COUNT ROUNDS   ROUNDS pulls, each tagging crash:SEED-r and untagging the previous
 *   gc STORE                        gc with grace 0
 *   gcloop STORE MS                 gc with grace 0 again and again for MS milliseconds
 * Prints "ready" once the store is open, then the result as JSON.
 */
import { Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import { bytesFor, runPull, sizeFor } from './store-fixtures.js';

async function main(argv: string[]): Promise<unknown> {
  const [mode, dir, a, b, c] = argv;
  const store = await Store.open(dir!, { create: true });
  process.stdout.write('ready\n');
  switch (mode) {
    case 'addmany': {
      const seed = a!;
      const count = Number(b);
      let created = 0;
      let existed = 0;
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < count) {
            const i = next++;
            const r = await store.objects.addBuffer(bytesFor(seed, i, sizeFor(seed, i)));
            if (r.existed) existed++;
            else created++;
          }
        }),
      );
      return { created, existed };
    }
    case 'pull':
      return { image: toHex(await runPull(store, a!, Number(b), c!)) };
    case 'pulls': {
      const images: string[] = [];
      for (let r = 0; r < Number(c); r++) {
        images.push(toHex(await runPull(store, `${a}-${r}`, Number(b), `${a}-${r}`)));
        if (r > 0) await store.deleteTag('crash', `${a}-${r - 1}`);
      }
      return { images };
    }
    case 'gc': {
      const r = await store.gc({ graceSeconds: 0 });
      return { images: r.removedImages.length, objects: r.removedObjects.length };
    }
    case 'gcloop': {
      const end = Date.now() + Number(a);
      let runs = 0;
      let objects = 0;
      while (Date.now() < end) {
        objects += (await store.gc({ graceSeconds: 0 })).removedObjects.length;
        runs++;
      }
      return { runs, objects };
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

main(process.argv.slice(2)).then(
  (r) => process.stdout.write(JSON.stringify(r) + '\n'),
  (err: Error) => {
    process.stderr.write(`store-child: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
