// Cold start of the reading view on localhost (env PACS_TEST_BIGCT_STUDY,
// the 400-slice uncompressed CT): a new browser context with the HTTP cache
// disabled. Checked: the reader's chunk is fetched through the page's
// `modulepreload` (viewer.html), not after the entry script ran; the series
// list and the displayed series' metadata are each asked for once (the
// entry chunk's early requests are reused by the reader); no JPEG 2000,
// HTJ2K, JPEG-LS or JPEG XL decoder is fetched for an uncompressed study; on
// a fast link the image on screen is lossless and no quality badge shows.
// The page names the study's series list and study row as `preload` links
// (the server adds them for the UID in the address) and the boot code's
// requests reuse them (one request each, started by the parser); the boot
// preview of the first image is asked for and on screen before the
// reader's code runs, and the boot screen is gone once the reader has
// drawn its first image. The first image is drawn by Cornerstone's CPU
// pipeline and the viewport then moves to the GPU (WebGL) one
// (`data-rendering="gpu"` on the reader). The tools (mouse bindings,
// measurements: a chunk of their own, which the page names for later) are
// not on that path: the chunk is asked for and its code run only after the
// first image is drawn, and they then work (a drag with the primary button
// changes the window).
// The time from navigation to the first image is reported, not asserted
// (bench/viewer-cold.sh measures it).
export default async function (ctx) {
  const uid = process.env.PACS_TEST_BIGCT_STUDY;
  if (!uid) {
    ctx.log('PACS_TEST_BIGCT_STUDY not set: nothing to check');
    return;
  }
  const page = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  // Who started the reader chunk's request: the page's parser (a preload
  // link) or a script (the entry's dynamic import, one round trip later).
  const readerInitiators = [];
  const seriesInitiators = [];
  cdp.on('Network.requestWillBeSent', (e) => {
    const path = new URL(e.request.url).pathname;
    if (/\/assets\/reader-[^/]*\.js$/.test(path)) readerInitiators.push(e.initiator.type);
    if (/\/studies\/[^/]+\/series$/.test(path)) seriesInitiators.push(e.initiator.type);
  });
  await page.goto(`${ctx.baseUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`);
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 60000 });
  await page.waitForFunction(() => window.senViewer.toolsReady(), null, { timeout: 60000 });
  // Let the prefetch start, so that a late duplicate request would show.
  await page.waitForTimeout(500);
  const r = await page.evaluate(() => ({
    preloads: [...document.querySelectorAll('link[rel="preload"][as="fetch"]')].map((l) => new URL(l.href).pathname + new URL(l.href).search),
    previewAsked: performance.getEntriesByType('resource').find((e) => /\/series\/[^/]+\/rendered\?accept=image/.test(e.name))?.startTime,
    firstPreview: performance.getEntriesByName('sen:first-preview', 'mark')[0]?.startTime,
    readerRunning: performance.getEntriesByName('sen:study-open', 'mark')[0]?.startTime,
    bootLeft: document.querySelectorAll('.boot').length,
    firstImage: performance.getEntriesByName('sen:first-image', 'mark')[0]?.startTime,
    toolsAsked: performance.getEntriesByType('resource').filter((e) => /\/assets\/tools-[^/]*\.js$/.test(e.name)).map((e) => e.startTime),
    toolsReady: performance.getEntriesByName('sen:tools-ready', 'mark')[0]?.startTime,
    rendering: document.querySelector('.rd')?.dataset.rendering,
    quality: document.querySelector('.rd-pane')?.dataset.quality,
    badgeHidden: document.querySelector('.rd-pane .rd-quality')?.hidden,
    mode: window.senQuality?.mode,
  }));
  ctx.assert(readerInitiators[0] === 'parser', `reader chunk preloaded by the page (${readerInitiators})`);
  const enc = encodeURIComponent(uid);
  ctx.assert(
    r.preloads.includes(`/dicom-web/studies/${enc}/series`) &&
      r.preloads.includes(`/dicom-web/studies?StudyInstanceUID=${enc}&includefield=00081030&includefield=00080061`),
    `the page preloads the study's first requests (${JSON.stringify(r.preloads)})`,
  );
  ctx.assert(seriesInitiators.length === 1 && seriesInitiators[0] === 'parser', `series list from the page's preload (${seriesInitiators})`);
  ctx.assert(
    r.previewAsked !== undefined && r.firstPreview !== undefined && r.readerRunning !== undefined &&
      r.previewAsked < r.readerRunning && r.firstPreview < r.readerRunning,
    `boot preview asked for and shown before the reader's code ran (${JSON.stringify(r)})`,
  );
  ctx.assert(
    r.toolsAsked.length === 1 && r.firstImage !== undefined && r.toolsAsked[0] >= r.firstImage &&
      r.toolsReady !== undefined && r.toolsReady > r.firstImage,
    `tools' chunk asked for once and run, both after the first image (${JSON.stringify(r)})`,
  );
  ctx.assert(r.rendering === 'gpu', `the viewport moved to the GPU pipeline after the first image (${r.rendering})`);
  // The tools work once loaded: a drag with the primary button (window/level by default) changes the window.
  const before = await page.evaluate(() => window.senViewer.panes()[0].ww);
  const box = await page.locator('.rd-vp').first().boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 + 80, box.y + box.height / 2 + 40, { steps: 8 });
  await page.mouse.up();
  await page.waitForFunction((w) => window.senViewer.panes()[0].ww !== w, before, { timeout: 10000 });
  ctx.assert(r.bootLeft === 0, 'the boot screen is gone once the reader shows its first image');
  const count = (re) => requests.filter((u) => re.test(new URL(u).pathname)).length;
  ctx.assert(count(/\/studies\/[^/]+\/series$/) === 1, `series list asked once (${count(/\/studies\/[^/]+\/series$/)})`);
  ctx.assert(count(/\/series\/[^/]+\/metadata$/) === 1, `series metadata asked once (${count(/\/series\/[^/]+\/metadata$/)})`);
  const codecs = requests.filter((u) => /openjpeg|openjph|charls|jpegxl/i.test(u));
  ctx.assert(codecs.length === 0, `no JPEG 2000 / HTJ2K / JPEG-LS / JPEG XL decoder fetched: ${codecs}`);
  ctx.assert(r.mode === 'full' && r.quality === 'full' && r.badgeHidden === true, `fast link: lossless, no badge (${JSON.stringify(r)})`);
  ctx.report('cold_first_image_from_navigation_ms', r.firstImage);
}
