/**
 * Fuzzing the dumpfile parser (and the writer behind it): 10,000 seeded mutations of the vector
 * dumpfiles each give a tree and an image, or a typed error; never another exception or a hang.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CfsError } from '../src/errors.js';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { writeImage } from '../src/erofs/writer.js';
import { VECTORS, vectorsMissing } from './helpers.js';
import { Rng } from './random-tree.js';

const SEEDS = ['special.dump', 'bigfile.dump', 'no-newline.dump', 'longlink.dump'].map((f) => join('upstream', f))
  .concat(['escapes.dump', 'hardlinks.dump', 'xattrs.dump', 'special-files.dump', 'external.dump', 'whiteouts-overlay.dump'].map((f) => join('extra', f)));
const TOKENS = [' ', '\n', '\\', '\\x', '\\x4', '@', '-', '/', '//', '.', '..', '=', '0', '9999999999999999999999', '100644', '40755', '120777', '20000', '@40755', '1.1', '\0', 'trusted.overlay.opaque=x', 'user.a=b'];

function mutate(rng: Rng, base: Buffer): Buffer {
  let b = Buffer.from(base);
  const n = rng.int(1, 4);
  for (let k = 0; k < n; k++) {
    const op = rng.int(0, 6);
    const at = rng.int(0, Math.max(0, b.length - 1));
    switch (op) {
      case 0: // bit flip
        if (b.length) b[at] = b[at]! ^ (1 << rng.int(0, 7));
        break;
      case 1: // truncate
        b = b.subarray(0, at);
        break;
      case 2: // insert a token
        b = Buffer.concat([b.subarray(0, at), Buffer.from(TOKENS[rng.int(0, TOKENS.length - 1)]!, 'latin1'), b.subarray(at)]);
        break;
      case 3: { // delete a span
        const len = rng.int(1, 20);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + len)]);
        break;
      }
      case 4: { // swap two lines
        const lines = b.toString('latin1').split('\n');
        const i = rng.int(0, lines.length - 1);
        const j = rng.int(0, lines.length - 1);
        [lines[i], lines[j]] = [lines[j]!, lines[i]!];
        b = Buffer.from(lines.join('\n'), 'latin1');
        break;
      }
      case 5: { // duplicate a line
        const lines = b.toString('latin1').split('\n');
        const i = rng.int(0, lines.length - 1);
        lines.splice(rng.int(0, lines.length), 0, lines[i]!);
        b = Buffer.from(lines.join('\n'), 'latin1');
        break;
      }
      default: // random byte
        if (b.length) b[at] = rng.int(0, 255);
    }
  }
  return b;
}

test('fuzz: 10,000 mutated dumpfiles give a tree and image or a typed error', { skip: vectorsMissing() }, () => {
  const bases = SEEDS.map((f) => readFileSync(join(VECTORS, f)));
  const rng = new Rng(20261125);
  let trees = 0;
  let errors = 0;
  let slowest = 0;
  for (let i = 0; i < 10_000; i++) {
    const input = mutate(rng, bases[i % bases.length]!);
    const t0 = performance.now();
    try {
      const tree = parseDumpfile(input, { strict: rng.chance(0.5), source: `case ${i}` });
      writeImage(tree, { minVersion: rng.int(0, 1), maxVersion: rng.int(0, 1) });
      trees++;
    } catch (e) {
      if (!(e instanceof CfsError)) {
        assert.fail(`case ${i}: untyped ${(e as Error)?.stack ?? e}\ninput: ${JSON.stringify(input.toString('latin1').slice(0, 400))}`);
      }
      errors++;
    }
    slowest = Math.max(slowest, performance.now() - t0);
  }
  assert.ok(trees > 500 && errors > 500, `both outcomes exercised (trees ${trees}, errors ${errors})`);
  assert.ok(slowest < 2000, `slowest case took ${slowest.toFixed(0)} ms`);
});
