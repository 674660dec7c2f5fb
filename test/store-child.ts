/**
 * Child process for the store concurrency and crash tests (not a test itself).
 *   addmany STORE SEED COUNT        add COUNT objects of SEED (8 at a time); prints {created,existed}
 *   pull STORE SEED COUNT TAG       one pull (objects, image, tag crash:TAG under a lease)
 *   pulls STORE SEED COUNT ROUNDS   ROUNDS pulls: untag crash:SEED-(r-1), pull crash:SEED-r, count
 *                                   objects of the new image that are missing afterwards
 *   gc STORE                        gc with grace 0
 *   gcloop STORE STOPFILE           gc with grace 0 again and again until STOPFILE exists
 * Prints "ready" once the store is open, then the result as JSON.
 */
import { existsSync } from 'node:fs';
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
      // Untag the previous round first: the objects this round shares with it are garbage
      // when this round finds them "already present" — the window a gc must not use.
      const images: string[] = [];
      let missing = 0;
      for (let r = 0; r < Number(c); r++) {
        if (r > 0) await store.deleteTag('crash', `${a}-${r - 1}`);
        const image = await runPull(store, `${a}-${r}`, Number(b), `${a}-${r}`);
        images.push(toHex(image));
        for (const d of await store.imageObjects(image)) if (!(await store.objects.has(d))) missing++;
      }
      return { images, missing };
    }
    case 'gc': {
      const r = await store.gc({ graceSeconds: 0 });
      return { images: r.removedImages.length, objects: r.removedObjects.length };
    }
    case 'gcloop': {
      // Until STOPFILE exists: gc, pause a few ms (a gc that never pauses would starve adders,
      // which yield to gc), again.
      let runs = 0;
      let objects = 0;
      while (!existsSync(a!)) {
        objects += (await store.gc({ graceSeconds: 0 })).removedObjects.length;
        runs++;
        await new Promise((r) => setTimeout(r, 2 + Math.random() * 10));
      }
      objects += (await store.gc({ graceSeconds: 0 })).removedObjects.length;
      return { runs: runs + 1, objects };
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
