// Runs the viewer's browser specs in Debian's Chromium through playwright-core.
//
//   node tests/browser/run.mjs --base http://127.0.0.1:PORT --out DIR spec.mjs [spec.mjs ...]
//
// Each spec is an ES module whose default export is `async (ctx) => {}` and
// throws on failure. ctx:
//   browser     the playwright Browser (one per run)
//   baseUrl     the server under test, e.g. http://127.0.0.1:8080
//   outDir      this spec's artefact directory (screenshots, timings)
//   newPage(opts)      a new page in a fresh context (opts: playwright context options,
//                      e.g. { viewport: {width: 390, height: 844}, hasTouch: true, isMobile: true });
//                      console errors and page errors are collected and fail the spec
//   screenshot(page, name)   saves `<outDir>/<NN>-<name>.png`
//   log(...args)       prints a line prefixed with the spec's name
//   report(key, value) records a measured number; all are written to `<outDir>/report.json`
//   assert(cond, message), assertClose(actual, expected, tolerance, message)
// Exit status: 0 when every spec passed, 1 otherwise. The last line is
// `browser specs: N passed, M failed`.
//
// Environment:
//   PACS_CHROMIUM           the browser (default /usr/bin/chromium)
//   PACS_TEST_BIGCT_STUDY   StudyInstanceUID of a 400-slice CT archived on the
//                           server (`gen-sample-data bench-ct --count 400`);
//                           tests/viewer.rs sets it. Specs that need it read
//                           process.env.PACS_TEST_BIGCT_STUDY.
//   PACS_TEST_CONFIG_DIR    the folder of the server's config file (tests/viewer.rs
//                           sets it): reader-hanging.spec.mjs writes
//                           hanging_protocols.json there and removes it again.
//
// In CI this runs from `cargo test` (tests/viewer.rs), which starts the server
// with the demo studies and the large CT, passes every tests/browser/*.spec.mjs
// and keeps the artefacts in target/browser-artifacts/.

import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const here = new URL('.', import.meta.url).pathname;
const { chromium } = require(resolve(here, '../../viewer-web/app/node_modules/playwright-core'));

function parseArgs(argv) {
  const args = { specs: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--base') args.base = argv[++i];
    else if (argv[i] === '--out') args.out = argv[++i];
    else args.specs.push(argv[i]);
  }
  if (!args.base || !args.out || args.specs.length === 0) {
    console.error('usage: node run.mjs --base URL --out DIR spec.mjs [...]');
    process.exit(2);
  }
  return args;
}

class AssertionError extends Error {}

const args = parseArgs(process.argv.slice(2));
const executablePath = process.env.PACS_CHROMIUM ?? '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--no-first-run', '--disable-quic', '--disable-sync', '--use-gl=swiftshader', '--enable-unsafe-swiftshader',
  ],
});

let passed = 0;
let failed = 0;
for (const specPath of args.specs) {
  const name = basename(specPath).replace(/\.spec\.mjs$|\.mjs$/, '');
  const outDir = resolve(args.out, name);
  mkdirSync(outDir, { recursive: true });
  const reportData = {};
  const pageProblems = [];
  const contexts = [];
  let shot = 0;
  const ctx = {
    browser,
    baseUrl: args.base.replace(/\/$/, ''),
    outDir,
    async newPage(opts = {}) {
      const context = await browser.newContext(opts);
      contexts.push(context);
      const page = await context.newPage();
      page.on('pageerror', (e) => pageProblems.push(`page error: ${e.stack ?? e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') pageProblems.push(`console error: ${m.text()}`);
      });
      return page;
    },
    async screenshot(page, label) {
      shot += 1;
      const file = resolve(outDir, `${String(shot).padStart(2, '0')}-${label}.png`);
      await page.screenshot({ path: file });
      return file;
    },
    log(...a) {
      console.log(`[${name}]`, ...a);
    },
    report(key, value) {
      reportData[key] = value;
      console.log(`[${name}] measured ${key} = ${typeof value === 'number' ? value.toFixed(1) : JSON.stringify(value)}`);
    },
    assert(cond, message) {
      if (!cond) throw new AssertionError(message);
    },
    assertClose(actual, expected, tolerance, message) {
      if (!(Math.abs(actual - expected) <= tolerance)) {
        throw new AssertionError(`${message}: got ${actual}, expected ${expected} ± ${tolerance}`);
      }
    },
  };
  const started = Date.now();
  try {
    const mod = await import(pathToFileURL(resolve(specPath)).href);
    await mod.default(ctx);
    if (pageProblems.length > 0) {
      throw new AssertionError(`the page reported errors:\n  ${pageProblems.join('\n  ')}`);
    }
    passed += 1;
    console.log(`spec ${name} ... ok (${Date.now() - started} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`spec ${name} ... FAILED (${Date.now() - started} ms)\n${e.stack ?? e}`);
    for (const c of contexts) {
      for (const p of c.pages()) {
        await p.screenshot({ path: resolve(outDir, 'failure.png') }).catch(() => {});
      }
    }
  } finally {
    writeFileSync(resolve(outDir, 'report.json'), JSON.stringify(reportData, null, 2) + '\n');
    for (const c of contexts) await c.close().catch(() => {});
  }
}
await browser.close();
console.log(`browser specs: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
