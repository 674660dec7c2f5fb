/**
 * `cfsdist import SOURCE NAME[:TAG]`: summary, --json, errors and exit codes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tarball } from './fixtures/oci/tar-writer.js';
import { writeLayout } from './fixtures/oci/layout-writer.js';

const HARNESS = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'oci', 'cli-harness.js');
let work: string;
let spec: string;

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [HARNESS, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(() => {
  work = mkdtempSync(join(tmpdir(), 'cfsdist-import-cli-'));
  spec = writeLayout(join(work, 'layout'), [
    { tar: tarball([{ path: './', type: 'dir' }, { path: 'bin/', type: 'dir' }, { path: 'bin/tool', content: 'T'.repeat(5000), mode: 0o755 }, { path: 'etc/', type: 'dir' }, { path: 'etc/conf', content: 'small' }]) },
    { tar: tarball([{ path: 'bin/.wh.tool' }, { path: 'bin/tool2', content: 'U'.repeat(6000) }]) },
  ], 'v1');
});

after(() => rmSync(work, { recursive: true, force: true }));

test('import prints NAME:TAG and the image digest, and a summary on stderr', () => {
  const r = cli('import', spec, 'demo/app:v1', '--store', join(work, 'store'), '--no-sync');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^demo\/app:v1  [0-9a-f]{64}\n$/);
  assert.match(r.stderr, /2 layers, \d+ entries, 2 files/);
  assert.match(r.stderr, /1 small file inline in the image; objects: 1 referenced; 2 written, 0 already present/);
});

test('--json gives the full result; a second import deduplicates everything; the tag defaults to latest', () => {
  const r = cli('import', spec, 'demo/app', '--store', join(work, 'store'), '--json', '--no-sync');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(j.name, 'demo/app');
  assert.equal(j.tag, 'latest');
  assert.match(String(j.image), /^[0-9a-f]{64}$/);
  assert.deepEqual([j.layers, j.files, j.inlined, j.objects, j.objectsNew, j.objectsExisting], [2, 2, 1, 1, 0, 2]);
  assert.equal(r.stderr, '', 'nothing on stderr with --json');
});

test('--inline-max sets which files are stored in the image: 0 makes every non-empty file an object; past 5000 is refused', () => {
  const r = cli('import', spec, 'demo/app:noinline', '--store', join(work, 'store'), '--json', '--no-sync', '--inline-max', '0');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual([j.files, j.inlined, j.objects], [2, 0, 2], 'etc/conf (5 bytes) is an object too');
  const bad = cli('import', spec, 'demo/app:bad', '--store', join(work, 'store'), '--inline-max', '5001');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--inline-max takes a number of bytes from 0 to 5000/);
});

test('--quiet prints only the result line', () => {
  const r = cli('import', spec, 'demo/app:q', '--store', join(work, 'store'), '--quiet', '--no-sync');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^demo\/app:q  [0-9a-f]{64}\n$/);
});

test('errors name the fault and exit 1; a bad source or name is reported before anything is read', () => {
  const missing = cli('import', `oci:${join(work, 'nope')}`, 'demo/x', '--store', join(work, 'store'));
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^cfsdist: .*nope.* is not a directory/m);
  const badRef = cli('import', spec.replace(/:v1$/, ':v9'), 'demo/x', '--store', join(work, 'store'));
  assert.equal(badRef.code, 1);
  assert.match(badRef.stderr, /no image named "v9"/);
  const badName = cli('import', spec, 'Bad Name', '--store', join(work, 'store'));
  assert.equal(badName.code, 1);
  assert.match(badName.stderr, /invalid image name/);
  const badTransport = cli('import', 'ftp:x', 'demo/x', '--store', join(work, 'store'));
  assert.equal(badTransport.code, 1);
  assert.match(badTransport.stderr, /unknown source transport/);
});
