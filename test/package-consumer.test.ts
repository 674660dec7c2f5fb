/**
 * The packed package as a consumer uses it: `npm pack`, install the tarball into a scratch
 * project, then (1) a JavaScript program imports `cfsdist` and builds, stores, tags and
 * inspects an image, and (2) a TypeScript program type-checks against the shipped .d.ts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './helpers.js';

let dir = '';
let tarball = '';

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-consumer-'));
  // dist/ is built by the test command already: pack it as is (no second build).
  run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--silent'], REPO);
  tarball = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!);
  const app = join(dir, 'app');
  spawnSync('mkdir', [app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', private: true }));
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--silent', tarball], app);
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a JavaScript consumer imports cfsdist: dumpfile → image → store → tag → inspect', () => {
  const app = join(dir, 'app');
  writeFileSync(
    join(app, 'use.mjs'),
    `import { parseDumpfile, writeImage, fsverityDigest, Store, inspectImage, readImage } from 'cfsdist';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
const dump = '/ 0 40755 2 0 0 0 0.0 - - -\\n/hello 6 100644 1 0 0 0 0.0 - hello\\\\x0a -\\n';
const tree = parseDumpfile(Buffer.from(dump));
const image = writeImage(tree);
const store = await Store.open(join(mkdtempSync(join(tmpdir(), 'c-')), 'store'), { create: true });
const digest = await store.addImage(image, []);
if (!digest.equals(fsverityDigest(image))) throw new Error('digest');
await store.setTag('demo', 'v1', digest, {});
const r = await inspectImage(store, 'demo:v1');
const root = readImage(image);
console.log(JSON.stringify({ image: r.image, entries: r.entries, names: [...root.entries.keys()] }));
`,
  );
  const out = JSON.parse(run(process.execPath, ['use.mjs'], app)) as { image: string; entries: number; names: string[] };
  assert.match(out.image, /^[0-9a-f]{64}$/);
  assert.equal(out.entries, 1);
  assert.deepEqual(out.names, ['hello']);
});

test('a TypeScript consumer type-checks against the shipped declarations', () => {
  const app = join(dir, 'app');
  writeFileSync(
    join(app, 'use.ts'),
    `import { Store, pull, runContainer, signImage, mountKernel, importImage, openSource, type PullSummary, type RunResult, type InspectReport } from 'cfsdist';
export async function f(s: Store): Promise<number> {
  const summary: PullSummary | undefined = undefined;
  const r: RunResult | undefined = undefined;
  const i: InspectReport | undefined = undefined;
  void [pull, runContainer, signImage, mountKernel, importImage, openSource, summary, r, i];
  return (await s.listTags()).length;
}
`,
  );
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, types: ['node'], typeRoots: [join(REPO, 'node_modules', '@types')] }, files: ['use.ts'] }));
  run(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], app);
  // …and a wrong use is refused: the types are real, not `any`.
  writeFileSync(join(app, 'bad.ts'), `import { Store } from 'cfsdist';\nexport const n: number = Store.open('x');\n`);
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, types: ['node'], typeRoots: [join(REPO, 'node_modules', '@types')] }, files: ['bad.ts'] }));
  const r = spawnSync(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], { cwd: app, encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout, /TS2322/);
});
