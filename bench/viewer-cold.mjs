// Cold start and slow-link timings of the viewer, from Chromium's own clock
// (the page's performance marks, all relative to navigation start), each run
// in a new browser context (an empty cache: a cold profile; the cache works
// within the run, as it would for a user).
//
//   node bench/viewer-cold.mjs --base http://127.0.0.1:PORT --study UID [--runs 5] [--link local|slow] [--viewer sen|ohif]
//
// `slow` is Chromium's network emulation (CDP Network.emulateNetworkConditions)
// at 2 Mbit/s and 150 ms RTT. Printed per run, then medians, as JSON:
//   boot_image_ms      navigation → the boot screen's first image (sen:boot-image), shown before the reader's
//                      code runs: on a fast link the lossless first image (the stored frame rendered as PNG at
//                      its own window, boot_quality "full"), otherwise a JPEG preview (boot_quality "preview")
//   first_lossless_ms  navigation → the first lossless image on screen: boot_image_ms when the boot image is
//                      lossless, else the reader's first image (localhost) or first_full_ms (slow link)
//   first_preview_ms   navigation → the boot screen's preview of the first image (sen:first-preview), when it is one
//   first_image_ms     navigation → first image in the Cornerstone viewport (sen:first-image)
//   previews_done_ms   navigation → every slice of the series loaded at preview quality (sen:previews-done)
//   first_full_ms      navigation → the slice on screen lossless (slow link)
//   canvas_image_ms    navigation → first lit pixels in a `canvas.cornerstone-canvas` (both viewers draw
//                      there; the one measure taken the same way for ours and OHIF's)
// With `--detail 1` each run also prints where the time went (ours only): from
// Resource Timing, when the page, the entry chunk, the reader's chunks, the
// series list, the boot preview, the metadata and the first pixel request
// started and ended, and the reader's own marks (reader code running,
// Cornerstone ready, viewport ready, metadata read, first image), in ms
// since navigation start.
// `--viewer ohif` measures stock OHIF instead: --base is then OHIF's origin
// (tests/ohif/check.mjs with SERVE_ONLY=1 serves it, /dicom-web forwarded
// to the archive); only canvas_image_ms applies.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const require = createRequire(import.meta.url);
const here = new URL('.', import.meta.url).pathname;
const { chromium } = require(resolve(here, '../viewer-web/app/node_modules/playwright-core'));

const args = { runs: 5, link: 'local', viewer: 'sen' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const k = argv[i].replace(/^--/, '');
  args[k] = argv[++i];
}
if (!args.base || !args.study) {
  console.error('usage: node bench/viewer-cold.mjs --base URL --study UID [--runs N] [--link local|slow]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.PACS_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-quic', '--use-gl=swiftshader', '--enable-unsafe-swiftshader'],
});
const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
const rows = [];
for (let run = 0; run < Number(args.runs); run++) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  if (args.link === 'slow') {
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 150, downloadThroughput: 2e6 / 8, uploadThroughput: 2e6 / 8, connectionType: 'cellular4g',
    });
  }
  if (args.detail) {
    // The main thread's long tasks (over 50 ms), for the breakdown.
    await page.addInitScript(() => {
      window.benchLongTasks = [];
      new PerformanceObserver((l) => {
        for (const e of l.getEntries()) window.benchLongTasks.push(`${Math.round(e.startTime)}+${Math.round(e.duration)}`);
      }).observe({ type: 'longtask', buffered: true });
    });
  }
  // First lit pixels on a Cornerstone canvas: a thin band across the middle, every frame.
  await page.addInitScript(() => {
    const tick = () => {
      for (const c of document.querySelectorAll('canvas.cornerstone-canvas')) {
        if (c.width < 8 || c.height < 8) continue;
        const ctx = c.getContext('2d');
        if (!ctx) continue;
        const d = ctx.getImageData(0, Math.floor(c.height / 2) - 1, c.width, 3).data;
        let lit = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 24) lit += 1;
        if (lit > c.width / 20) {
          performance.mark('bench:canvas-image');
          return;
        }
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  await page.goto(`${args.base}/viewer?StudyInstanceUIDs=${encodeURIComponent(args.study)}`, { waitUntil: 'commit', timeout: 120000 });
  const mark = (name) => page.evaluate((n) => performance.getEntriesByName(n, 'mark')[0]?.startTime, name);
  await page.waitForFunction(() => performance.getEntriesByName('bench:canvas-image', 'mark').length > 0, null, { timeout: 600000 });
  const row = { canvas_image_ms: await mark('bench:canvas-image') };
  if (args.viewer === 'sen') {
    await page.waitForFunction(() => performance.getEntriesByName('sen:first-image', 'mark').length > 0, null, { timeout: 300000 });
    row.boot_image_ms = await mark('sen:boot-image');
    row.boot_quality = await page.evaluate(() => performance.getEntriesByName('sen:boot-image', 'mark')[0]?.detail?.quality);
    row.first_preview_ms = await mark('sen:first-preview');
    row.first_image_ms = await mark('sen:first-image');
  }
  if (args.link === 'slow' && args.viewer === 'sen') {
    await page.waitForFunction(() => performance.getEntriesByName('sen:previews-done', 'mark').length > 0, null, { timeout: 300000 });
    row.previews_done_ms = await mark('sen:previews-done');
    await page.waitForFunction(() => document.querySelector('.rd-pane')?.dataset.quality === 'full', null, { timeout: 300000 });
    row.first_full_ms = await page.evaluate(() => performance.now());
    row.preview_bytes = await page.evaluate(() => window.senQuality?.stats.previewBytes);
  }
  if (args.viewer === 'sen') {
    row.first_lossless_ms =
      row.boot_quality === 'full' ? row.boot_image_ms : args.link === 'slow' ? row.first_full_ms : row.first_image_ms;
  }
  if (args.detail && args.viewer === 'sen') {
    const detail = await page.evaluate(() => {
      const r = (e) => e && [Math.round(e.startTime), Math.round(e.responseEnd)];
      const res = performance.getEntriesByType('resource');
      const find = (re) => res.find((e) => re.test(e.name));
      const nav = performance.getEntriesByType('navigation')[0];
      const m = (n) => {
        const e = performance.getEntriesByName(n, 'mark')[0];
        return e ? Math.round(e.startTime) : undefined;
      };
      return {
        html: nav && [Math.round(nav.requestStart), Math.round(nav.responseEnd)],
        boot_quality: performance.getEntriesByName('sen:boot-image', 'mark')[0]?.detail?.quality,
        entry_js: r(find(/\/assets\/index-[^/]*\.js$/)),
        reader_js: r(find(/\/assets\/reader-[^/]*\.js$/)),
        core_js: r(find(/\/assets\/utilities-[^/]*\.js$/)),
        series_json: r(find(/\/series$/)),
        boot_preview: r(find(/\/rendered\?accept=image/)),
        metadata: r(find(/\/metadata$/)),
        first_frame: r(find(/\/frames\/1$/)),
        dom_content_loaded: nav && Math.round(nav.domContentLoadedEventEnd),
        reader_running: m('sen:study-open'),
        cornerstone_ready: m('sen:cornerstone-ready'),
        viewport_ready: m('sen:viewport-ready'),
        series_metadata: m('sen:series-metadata'),
        boot_image: m('sen:boot-image'),
        first_image: m('sen:first-image'),
        long_tasks: window.benchLongTasks,
        styles: res.filter((e) => /\.css$/.test(e.name)).map((e) => `${e.name.replace(/.*\//, '')} ${Math.round(e.startTime)}-${Math.round(e.responseEnd)}`),
        scripts: res.filter((e) => /\.js$/.test(e.name)).map((e) => `${e.name.replace(/.*\//, '')} ${Math.round(e.startTime)}-${Math.round(e.responseEnd)}`),
      };
    });
    console.log(JSON.stringify({ run: run + 1, detail }));
  }
  for (const k of Object.keys(row)) if (typeof row[k] === 'number') row[k] = Math.round(row[k]);
  console.log(JSON.stringify({ run: run + 1, viewer: args.viewer, link: args.link, ...row }));
  rows.push(row);
  await context.close();
}
await browser.close();
const out = { viewer: args.viewer, link: args.link, runs: rows.length };
for (const k of Object.keys(rows[0] ?? {})) {
  if (typeof rows[0][k] === 'number' || rows[0][k] === undefined) out[`median_${k}`] = median(rows.map((r) => r[k]));
  else out[k] = [...new Set(rows.map((r) => r[k]))].join(',');
}
console.log(JSON.stringify(out));
