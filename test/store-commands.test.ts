/**
 * The everyday store commands as users type them: `tag SRC DST` (config and source facts go
 * along), `rm NAME:TAG` (untag; gc then frees what nothing else uses), `images --json`,
 * `--version` from package.json.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO, runCli } from './helpers.js';

let dir = '';
let store = '';

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-storecmd-'));
  store = join(dir, 'store');
  const src = join(dir, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'big'), Buffer.alloc(64 * 1024, 7));
  writeFileSync(join(src, 'small'), 'hello\n');
  const r = runCli(['--store', store, 'import', `dir:${src}`, 'app:v1']);
  assert.equal(r.status, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('--version prints the version in package.json', () => {
  const r = runCli(['--version']);
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version);
});

test('tag SRC DST points DST at the same image with the same config; images --json lists both', () => {
  let r = runCli(['--store', store, 'tag', 'app:v1', 'mirror/app:stable']);
  assert.equal(r.status, 0, r.stderr);
  r = runCli(['--store', store, 'images', '--json']);
  const rows = JSON.parse(r.stdout) as { name: string; tag: string; image: string; objects: number; config: string; platform: string }[];
  assert.deepEqual(rows.map((x) => `${x.name}:${x.tag}`), ['app:v1', 'mirror/app:stable']);
  assert.equal(rows[0]!.image, rows[1]!.image);
  assert.match(rows[0]!.config, /^sha256:[0-9a-f]{64}$/);
  assert.equal(rows[1]!.config, rows[0]!.config);
  assert.equal(rows[0]!.platform, rows[1]!.platform);
  assert.equal(rows[0]!.objects, 1);
  // By digest too.
  r = runCli(['--store', store, 'tag', rows[0]!.image, 'bydigest']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(store, 'tags', 'bydigest', ':latest'), 'utf8').split('\n')[0], rows[0]!.image);
  assert.notEqual(runCli(['--store', store, 'tag', 'nosuch:tag', 'x']).status, 0);
});

test('rm untags; gc frees the image only once no tag names it; rm of an unknown tag is a usage error', () => {
  const image = (JSON.parse(runCli(['--store', store, 'images', '--json']).stdout) as { image: string }[])[0]!.image;
  let r = runCli(['--store', store, 'rm', 'mirror/app:stable', 'bydigest']);
  assert.equal(r.status, 0, r.stderr);
  r = runCli(['--store', store, 'gc', '--grace', '0']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(store, 'images', image)), 'app:v1 still names it');
  r = runCli(['--store', store, 'rm', 'app:v1']);
  assert.equal(r.status, 0, r.stderr);
  r = runCli(['--store', store, 'gc', '--grace', '0', '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(existsSync(join(store, 'images', image)), false);
  assert.deepEqual(JSON.parse(runCli(['--store', store, 'images', '--json']).stdout), []);
  r = runCli(['--store', store, 'rm', 'app:v1']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no image tagged app:v1/);
});
