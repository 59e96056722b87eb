// Imports a pure TypeScript module of the app (no imports of its own) under
// Node for the unit tests in test/: transpiled with the pinned `typescript`
// package into a temporary file. Kept outside test/ so `node --test test/`
// does not count it as a test file.
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const app = new URL('..', import.meta.url).pathname;
const require = createRequire(import.meta.url);
const ts = require(join(app, 'node_modules/typescript'));

/** `path` relative to viewer-web/app, e.g. `src/reader/mpr/geometry.ts`. */
export async function importTs(path) {
  const { outputText } = ts.transpileModule(readFileSync(join(app, path), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  const file = join(mkdtempSync(join(tmpdir(), 'sen-viewer-test-')), basename(path).replace(/\.ts$/, '.mjs'));
  writeFileSync(file, outputText);
  return import(pathToFileURL(file).href);
}
