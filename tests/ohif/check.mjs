// Drives OHIF Viewer's prebuilt app against a running Sen PACS server and checks that it lists
// and displays the demo studies. Started by tests/ohif/run.sh, which installs OHIF and starts
// the archive; this script serves OHIF on its own origin, forwards /dicom-web and /wado to the
// archive, and drives Debian's Chromium through playwright-core.
//
// Environment: PACS_URL (http://127.0.0.1:PORT of the archive), OHIF_DIST (OHIF's dist/),
// OUT_DIR (screenshots and report), MANIFEST (sample-data/manifest.json), CHROMIUM.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) {
    throw new Error(`${name} is not set`);
  }
  return v;
};
const pacsUrl = new URL(env('PACS_URL'));
const distDir = path.resolve(env('OHIF_DIST'));
const outDir = path.resolve(env('OUT_DIR'));
const manifestPath = env('MANIFEST');
const chromiumPath = env('CHROMIUM', '/usr/bin/chromium');
// OHIF_ARCHIVE=direct points OHIF at the archive's own origin (cross-origin) instead of the
// forwarding path on OHIF's origin.
const direct = process.env.OHIF_ARCHIVE === 'direct';
const appConfig =
  (direct ? `window.senPacsArchive = ${JSON.stringify(pacsUrl.origin)};\n` : '') +
  fs.readFileSync(path.join(here, 'app-config.js'), 'utf8');

fs.mkdirSync(outDir, { recursive: true });

// ---------------------------------------------------------------------------------------------
// Demo studies, from the sample data manifest.
const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
const studies = new Map();
for (const f of manifest.files) {
  let s = studies.get(f.study_instance_uid);
  if (!s) {
    s = {
      name: f.study,
      uid: f.study_instance_uid,
      patientName: f.patient_name,
      patientId: f.patient_id,
      modality: f.modality,
      series: new Set(),
      instances: 0,
    };
    studies.set(f.study_instance_uid, s);
  }
  s.series.add(f.series_instance_uid);
  s.instances += 1;
}

// ---------------------------------------------------------------------------------------------
// Static server for OHIF's dist with our app-config.js; /dicom-web and /wado go to the archive.
const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.ttf': 'font/ttf',
  '.xml': 'application/xml',
  '.txt': 'text/plain; charset=utf-8',
};
// OHIF asks for cross-origin isolation (SharedArrayBuffer for its decoders and volume loading).
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

function proxy(req, res) {
  const upstream = http.request(
    {
      host: pacsUrl.hostname,
      port: pacsUrl.port,
      method: req.method,
      path: req.url,
      // Host is kept so the archive's absolute URLs (RetrieveURL, BulkDataURI) name this origin.
      headers: req.headers,
    },
    (up) => {
      res.writeHead(up.statusCode ?? 502, { ...up.headers, ...isolation });
      up.pipe(res);
    },
  );
  upstream.on('error', (err) => {
    if (!res.headersSent) {
      res.writeHead(502, { 'Content-Type': 'text/plain' });
    }
    res.end(`proxy error: ${err.message}`);
  });
  req.pipe(upstream);
}

function serveStatic(req, res) {
  const url = new URL(req.url ?? '/', 'http://local');
  let rel = decodeURIComponent(url.pathname);
  if (rel === '/app-config.js') {
    res.writeHead(200, { 'Content-Type': types['.js'], 'Cache-Control': 'no-cache', ...isolation });
    res.end(appConfig);
    return;
  }
  let file = path.resolve(distDir, '.' + rel);
  if (!file.startsWith(distDir + path.sep) && file !== distDir) {
    res.writeHead(403).end();
    return;
  }
  let stat = fs.statSync(file, { throwIfNoEntry: false });
  if (!stat || stat.isDirectory()) {
    // Single-page app: routes such as /viewer fall back to index.html; missing assets are 404.
    if (path.extname(rel) !== '' && !rel.startsWith('/viewer')) {
      res.writeHead(404, isolation).end();
      return;
    }
    file = path.join(distDir, 'index.html');
    stat = fs.statSync(file);
  }
  res.writeHead(200, {
    'Content-Type': types[path.extname(file)] ?? 'application/octet-stream',
    'Content-Length': stat.size,
    ...isolation,
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  fs.createReadStream(file).pipe(res);
}

const server = http.createServer((req, res) => {
  const p = req.url ?? '/';
  if (p === '/dicom-web' || p.startsWith('/dicom-web/') || p.startsWith('/dicom-web?') ||
      p === '/wado' || p.startsWith('/wado?')) {
    proxy(req, res);
  } else {
    serveStatic(req, res);
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
console.log(
  direct
    ? `OHIF served at ${origin}, pointed at ${pacsUrl.origin}/dicom-web (cross-origin)`
    : `OHIF served at ${origin}, /dicom-web forwarded to ${pacsUrl.origin}`,
);
if (process.env.SERVE_ONLY) {
  // Manual use: keep serving until interrupted.
  console.log('SERVE_ONLY set: open the address above in a browser; Ctrl-C to stop');
  await new Promise((resolve) => {
    process.on('SIGINT', resolve);
    process.on('SIGTERM', resolve);
  });
  server.close();
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Browser.
const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--disable-quic',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, locale: 'en-US' });
const page = await context.newPage();

const results = { ohifVersion: process.env.OHIF_VERSION ?? '', ohifOrigin: origin, steps: [] };
const requests = []; // every /dicom-web and /wado request
const started = new Map();
const consoleErrors = [];
let step = 'start';
const isArchive = (u) => {
  const p = new URL(u).pathname;
  return p.startsWith('/dicom-web') || p === '/wado';
};
results.archive = direct ? `direct, cross-origin: ${pacsUrl.origin}` : `forwarded by ${origin}`;
page.on('request', (r) => {
  if (isArchive(r.url())) {
    started.set(r, { t0: performance.now(), step });
  }
});
const finish = async (r, failure) => {
  if (!isArchive(r.url())) {
    return;
  }
  const t1 = performance.now();
  const { t0, step: during } = started.get(r) ?? { t0: t1, step };
  const resp = failure ? null : await r.response();
  const u = new URL(r.url());
  requests.push({
    step: during,
    method: r.method(),
    url: u.pathname + u.search,
    accept: r.headers()['accept'] ?? '',
    status: resp ? resp.status() : 0,
    contentType: resp ? (resp.headers()['content-type'] ?? '') : '',
    ms: Math.round(t1 - t0),
    failure: failure ?? undefined,
  });
};
page.on('requestfinished', (r) => finish(r, null));
page.on('requestfailed', (r) => finish(r, r.failure()?.errorText ?? 'failed'));
// What the archive answered to the study list's patient name searches (PatientName -> names).
const nameSearches = new Map();
page.on('response', async (r) => {
  const u = new URL(r.url());
  const name = u.searchParams.get('PatientName');
  if (u.pathname === '/dicom-web/studies' && name !== null && r.status() === 200) {
    try {
      const body = await r.json();
      nameSearches.set(
        name,
        body.map((d) => d['00100010']?.Value?.[0]?.Alphabetic ?? ''),
      );
    } catch {
      nameSearches.set(name, 'unreadable answer');
    }
  }
});
page.on('console', (m) => {
  if (m.type() === 'error') {
    consoleErrors.push({ step, text: m.text().slice(0, 500) });
  }
});
page.on('pageerror', (e) => consoleErrors.push({ step, text: `pageerror: ${String(e).slice(0, 500)}` }));

let failed = false;
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  results.steps.push({ ok, what });
  if (!ok) {
    failed = true;
  }
};
const shot = async (name) => {
  await page.screenshot({ path: path.join(outDir, `${name}.png`) });
};

// Pixel statistics of each visible cornerstone canvas (a 2D canvas that Cornerstone3D copies
// each rendered frame into), largest first.
async function canvasStats() {
  return page.evaluate(() => {
    const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas')].filter(
      (c) => c.width > 0 && c.height > 0 && c.offsetParent !== null,
    );
    canvases.sort((a, b) => b.width * b.height - a.width * a.height);
    return canvases.map((c) => {
      const ctx = c.getContext('2d');
      if (!ctx) {
        return { error: 'no 2d context', w: c.width, h: c.height };
      }
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      let max = 0;
      const seen = new Set();
      for (let i = 0; i < d.length; i += 4) {
        const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
        if (v > 8) {
          lit += 1;
        }
        max = Math.max(max, v);
        if (seen.size < 512) {
          seen.add(d[i] | (d[i + 1] << 8) | (d[i + 2] << 16));
        }
      }
      return { w: c.width, h: c.height, litShare: Number((lit / (d.length / 4)).toFixed(3)), max, colours: seen.size };
    });
  });
}

async function waitFor(what, fn, timeoutMs) {
  const t0 = performance.now();
  for (;;) {
    const v = await fn();
    if (v) {
      return { value: v, ms: Math.round(performance.now() - t0) };
    }
    if (performance.now() - t0 > timeoutMs) {
      return { value: null, ms: Math.round(performance.now() - t0) };
    }
    await page.waitForTimeout(200);
  }
}

// Study rows of the study list, as cell texts.
async function studyRows() {
  return page.evaluate(() =>
    [...document.querySelectorAll('table tbody tr[aria-selected]')].map((tr) =>
      [...tr.querySelectorAll('td')].map((td) => td.innerText.trim()),
    ),
  );
}

// Does a row of the study list show this demo study? OHIF shows the name as "Family, Given",
// the modalities, the description, the accession number and the instance count.
function rowMatches(row, s) {
  const text = row.join(' | ');
  const parts = s.patientName.split('^').filter((p) => p !== '');
  return parts.every((p) => text.includes(p)) && row.includes(s.modality) && row.includes(String(s.instances));
}

// Waits until `count` viewports show a rendered, non-blank image: a real share of the canvas lit
// and several grey levels (not a flat fill). Returns their statistics.
async function waitForImage(timeoutMs, count = 1) {
  return waitFor(
    'image',
    async () => {
      const all = await canvasStats();
      const shown = all.filter((st) => !st.error && st.litShare > 0.02 && st.colours >= 3);
      return all.length >= count && shown.length >= count ? all : null;
    },
    timeoutMs,
  );
}

async function skipTour() {
  const skip = page.getByText('Skip all', { exact: true });
  if (await skip.count()) {
    await skip.first().click().catch(() => {});
  }
}

// The slice indicator of the active viewport ("I: 24 (1/24)").
async function sliceIndicator() {
  return page.evaluate(() => {
    const m = document.body.innerText.match(/\((\d+)\/(\d+)\)/);
    return m ? { index: Number(m[1]), total: Number(m[2]) } : null;
  });
}

const byName = new Map([...studies.values()].map((s) => [s.name, s]));

try {
  // 1. Study list.
  step = 'study-list';
  const expected = [...studies.values()];
  let t0 = performance.now();
  await page.goto(`${origin}/`, { waitUntil: 'domcontentloaded' });
  const listed = await waitFor(
    'study list',
    async () => {
      const rows = await studyRows();
      return expected.every((s) => rows.some((r) => rowMatches(r, s))) ? rows : null;
    },
    60_000,
  );
  results.timings = { studyListMs: Math.round(performance.now() - t0) };
  await shot('01-study-list');
  const rows = listed.value ?? (await studyRows());
  fs.writeFileSync(path.join(outDir, 'study-list.txt'), rows.map((r) => r.join(' | ')).join('\n') + '\n');
  check(rows.length === expected.length, `study list has ${rows.length} rows (${expected.length} demo studies)`);
  for (const s of expected) {
    check(
      rows.some((r) => rowMatches(r, s)),
      `study list shows ${s.name}: ${s.patientName}, ${s.modality}, ${s.instances} instances`,
    );
  }
  if (listed.value === null) {
    throw new Error('the study list did not show the demo studies; later steps skipped');
  }

  // 1b. Search by patient name. OHIF sends PatientName=*text* with fuzzymatching=true, then also
  // filters the returned rows itself by a plain case-insensitive substring of the shown name.
  step = 'study-list-search';
  const nguyen = expected.filter((s) => s.patientName.startsWith('Nguyễn'));
  const nameFilter = page.locator('table thead input, table input').first();
  const searchRows = async (typed, want) => {
    await nameFilter.fill(typed);
    const got = await waitFor(
      `search ${typed}`,
      async () => {
        const r = await studyRows();
        return nameSearches.has(`*${typed}*`) && r.length === want ? r : null;
      },
      15_000,
    );
    return got.value ?? (await studyRows());
  };
  let found = await searchRows('nguyễn', nguyen.length);
  await shot('02-study-list-search');
  check(
    found.length === nguyen.length && nguyen.every((s) => found.some((r) => rowMatches(r, s))),
    `typing "nguyễn" lists the ${nguyen.length} studies of Nguyễn^Văn An (got ${found.length} rows)`,
  );
  found = await searchRows('nguyen', 0);
  const answer = nameSearches.get('*nguyen*');
  check(
    Array.isArray(answer) && answer.length === nguyen.length,
    `archive answers PatientName=*nguyen*&fuzzymatching=true with ${JSON.stringify(answer)}`,
  );
  results.searchWithoutDiacritics = {
    archiveAnswered: answer,
    ohifShowedRows: found.length,
    note: 'OHIF filters the answer again in the browser by the displayed name, accents included',
  };
  console.log(`info typing "nguyen": archive answered ${answer?.length ?? '?'} studies, OHIF shows ${found.length} rows`);
  await nameFilter.fill('');
  await waitFor('list again', async () => ((await studyRows()).length === expected.length ? true : null), 15_000);

  // 2. Select the CT phantom in the list: OHIF shows its series with a thumbnail.
  step = 'study-panel';
  const ct = byName.get('ct-phantom');
  if (!ct) {
    throw new Error('ct-phantom not in the manifest');
  }
  const ctIndex = (await studyRows()).findIndex((r) => rowMatches(r, ct));
  await page.locator('table tbody tr[aria-selected]').nth(ctIndex).click();
  t0 = performance.now();
  const thumb = await waitFor(
    'thumbnail',
    () =>
      page.evaluate(() => {
        const imgs = [...document.querySelectorAll('[data-cy="study-browser-thumbnail"] img, img')];
        const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0 && !i.src.endsWith('.svg'));
        return ok.length > 0 ? ok.map((i) => `${i.naturalWidth}x${i.naturalHeight}`) : null;
      }),
    30_000,
  );
  results.timings.panelThumbnailMs = Math.round(performance.now() - t0);
  await shot('03-study-panel');
  const panelText = await page.evaluate(() => document.body.innerText);
  check(panelText.includes(ct.patientId), `study panel shows patient ID ${ct.patientId}`);
  check(thumb.value !== null, `study panel shows a series thumbnail (${thumb.value ?? 'none'})`);

  // 3. Open it in the Basic Viewer mode and wait for the first image.
  step = 'viewer-ct';
  t0 = performance.now();
  await page.getByRole('button', { name: 'Basic Viewer' }).click();
  await page.waitForURL(/\/viewer/, { timeout: 30_000 });
  const img = await waitForImage(60_000);
  results.timings.ctFirstImageMs = Math.round(performance.now() - t0);
  await skipTour();
  await page.waitForTimeout(500);
  await shot('04-viewer-ct-phantom');
  check(page.url().includes(ct.uid), `viewer URL names the study (${page.url().replace(origin, '')})`);
  check(img.value !== null, `CT phantom rendered: ${JSON.stringify(img.value ?? (await canvasStats()))}`);
  results.ctCanvas = img.value;
  const rail = await page.evaluate(() =>
    [...document.images].filter((i) => i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:')).length,
  );
  check(rail > 0, `viewer's study browser shows ${rail} series thumbnail(s)`);

  // 4. Scroll through the stack with the mouse wheel.
  step = 'viewer-ct-scroll';
  const before = await sliceIndicator();
  const box = await page.locator('canvas.cornerstone-canvas').first().boundingBox();
  if (box) {
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    for (let i = 0; i < 5; i += 1) {
      await page.mouse.wheel(0, 120);
      await page.waitForTimeout(150);
    }
  }
  const after = await waitFor(
    'scroll',
    async () => {
      const s = await sliceIndicator();
      return s && before && s.index !== before.index ? s : null;
    },
    10_000,
  );
  const scrolled = after.value && (await waitForImage(10_000)).value;
  await shot('05-viewer-ct-scrolled');
  check(
    Boolean(after.value && scrolled),
    `wheel scroll moves the stack: ${JSON.stringify(before)} -> ${JSON.stringify(after.value)}`,
  );

  // 5. The other demo studies, opened by OHIF's study link.
  let n = 6;
  for (const s of expected) {
    if (s.uid === ct.uid) {
      continue;
    }
    step = `viewer-${s.name}`;
    t0 = performance.now();
    await page.goto(`${origin}/viewer?StudyInstanceUIDs=${s.uid}`, { waitUntil: 'domcontentloaded' });
    const shown = await waitForImage(60_000);
    results.timings[`${s.name}FirstImageMs`] = Math.round(performance.now() - t0);
    await skipTour();
    await page.waitForTimeout(500);
    await shot(`${String(n).padStart(2, '0')}-viewer-${s.name}`);
    n += 1;
    check(
      shown.value !== null,
      `${s.name} (${s.modality}) rendered: ${JSON.stringify(shown.value ?? (await canvasStats()))}`,
    );
  }

  // 6. The CT phantom in OHIF's MPR layout: a volume built from the frames, resliced into
  // axial, sagittal and coronal views.
  step = 'viewer-ct-mpr';
  t0 = performance.now();
  await page.goto(`${origin}/viewer?StudyInstanceUIDs=${ct.uid}&hangingProtocolId=mpr`, {
    waitUntil: 'domcontentloaded',
  });
  let mpr = await waitForImage(60_000, 3);
  results.timings.ctMprFirstImagesMs = Math.round(performance.now() - t0);
  // The volume fills in as frames arrive: measure again once every frame has been fetched.
  const volume = await waitFor(
    'volume',
    async () =>
      requests.filter((r) => r.step === step && r.url.includes('/frames/') && r.status === 200).length >=
      ct.instances
        ? true
        : null,
    60_000,
  );
  results.timings.ctMprAllFramesMs = Math.round(performance.now() - t0);
  check(volume.value !== null, `MPR fetched all ${ct.instances} frames of the CT phantom`);
  await page.waitForTimeout(1000);
  mpr = await waitForImage(10_000, 3);
  await skipTour();
  await page.waitForTimeout(500);
  await shot(`${String(n).padStart(2, '0')}-viewer-ct-phantom-mpr`);
  check(mpr.value !== null, `CT phantom MPR shows 3 views: ${JSON.stringify(mpr.value ?? (await canvasStats()))}`);
} catch (err) {
  check(false, `run aborted: ${err.stack ?? err}`);
} finally {
  // Every archive request OHIF made, grouped by resource kind and status.
  const kind = (u) => {
    const p = u.split('?')[0];
    if (p === '/wado') return 'WADO-URI';
    if (/\/frames\/[^/]+\/rendered$/.test(p) || /\/rendered$/.test(p)) return 'rendered';
    if (/\/thumbnail$/.test(p)) return 'thumbnail';
    if (/\/frames\/[^/]+$/.test(p)) return 'frames';
    if (/\/metadata$/.test(p)) return 'metadata';
    if (/\/bulkdata\//.test(p) || /\/bulk/.test(p)) return 'bulkdata';
    if (/\/(studies|series|instances)$/.test(p)) return 'QIDO ' + p.replace(/\/[0-9.]+/g, '/{uid}');
    return 'other ' + p;
  };
  const summary = {};
  for (const r of requests) {
    const k = `${r.method} ${kind(r.url)} -> ${r.status || r.failure}`;
    summary[k] = summary[k] ?? { count: 0, maxMs: 0 };
    summary[k].count += 1;
    summary[k].maxMs = Math.max(summary[k].maxMs, r.ms);
  }
  results.requestSummary = summary;
  results.failedRequests = requests.filter((r) => r.status === 0 || r.status >= 400);
  results.consoleErrors = consoleErrors.length;
  console.log('archive requests made by OHIF (kind -> status: count, slowest):');
  for (const [k, v] of Object.entries(summary)) {
    console.log(`  ${k}: ${v.count}, ${v.maxMs} ms`);
  }
  for (const r of results.failedRequests) {
    console.log(`  FAILED ${r.method} ${r.url} (Accept: ${r.accept}) -> ${r.status || r.failure}`);
  }
  console.log(`timings: ${JSON.stringify(results.timings ?? {})}`);
  console.log(`console errors: ${consoleErrors.length} (see console-errors.json)`);
  if (results.failedRequests.length > 0) {
    check(false, `${results.failedRequests.length} archive request(s) failed`);
  }
  fs.writeFileSync(path.join(outDir, 'requests.json'), JSON.stringify(requests, null, 2));
  fs.writeFileSync(path.join(outDir, 'console-errors.json'), JSON.stringify(consoleErrors, null, 2));
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2));
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
