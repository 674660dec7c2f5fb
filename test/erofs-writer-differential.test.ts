/**
 * Differential test against the C reference: random trees (every file type, hardlinks,
 * whiteouts, binary and overlay xattrs, awkward names, big directories) are written as dumpfiles;
 * our image and `mkcomposefs --from-file` must be byte-identical, for versions 0 and 1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { writeImage } from '../src/erofs/writer.js';
import { REFERENCE_BIN } from './helpers.js';
import { randomTree } from './random-tree.js';

const MK = join(REFERENCE_BIN, 'mkcomposefs');

function skipReason(): string | false {
  if (!existsSync(MK)) return `reference mkcomposefs not found at ${MK}`;
  const r = spawnSync(MK, ['--help']);
  if (r.error) return `reference mkcomposefs cannot run: ${r.error.message}`;
  return false;
}

test('random trees: our image equals C mkcomposefs byte for byte', { skip: skipReason() }, () => {
  // The work dir is removed only on success, so a failing dumpfile can be inspected.
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-diff-'));
  {
    const shapes = [
      { entries: 150 },
      { entries: 400, maxDepth: 8 },
      { entries: 60, bigDir: 1500 },
      { entries: 50, deepPath: 60 },
      { entries: 200, whiteouts: false },
    ];
    let n = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const opts = shapes[seed % shapes.length]!;
      const dump = formatDumpfile(randomTree(seed, opts));
      const dumpPath = join(work, `t${seed}.dump`);
      writeFileSync(dumpPath, dump);
      for (const versions of [[], ['--min-version=0', '--max-version=0'], ['--min-version=1']]) {
        const out = join(work, `t${seed}.cfs`);
        const r = spawnSync(MK, [...versions, '--from-file', dumpPath, out], { env: { ...process.env, CFS_PARSE_STRICT: '1' } });
        assert.equal(r.status, 0, `seed ${seed}: reference failed: ${r.stderr}`);
        const theirs = readFileSync(out);
        const minVersion = versions.includes('--min-version=1') ? 1 : 0;
        const maxVersion = versions.includes('--max-version=0') ? 0 : undefined;
        const ours = writeImage(parseDumpfile(dump, { strict: true, source: dumpPath }), { minVersion, maxVersion });
        if (!ours.equals(theirs)) {
          let at = 0;
          while (at < Math.min(ours.length, theirs.length) && ours[at] === theirs[at]) at++;
          assert.fail(`seed ${seed} ${versions.join(' ')}: images differ at byte ${at} (sizes ${ours.length} vs ${theirs.length}); dumpfile kept at ${dumpPath}`);
        }
        n++;
      }
    }
    assert.equal(n, 120);
    rmSync(work, { recursive: true, force: true });
  }
});
