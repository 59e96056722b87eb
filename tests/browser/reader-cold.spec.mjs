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
// screen's first image is asked for and on screen before the reader's code
// runs, and the boot screen is gone once the reader has drawn its first
// image. On this fast link the boot image is the lossless one: the series'
// first image rendered as PNG at the image's own window, with no preview
// badge, and its pixels are the stored frame through that window (PS3.3
// C.11.2.1.2.1, LINEAR) within one grey level, checked here against the
// frame asked for over WADO-RS and windowed in the page. The first image is drawn by Cornerstone's CPU
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
    bootUrl: performance.getEntriesByType('resource').find((e) => /\/series\/[^/]+\/rendered\?accept=image/.test(e.name))?.name,
    bootImage: performance.getEntriesByName('sen:boot-image', 'mark')[0]?.startTime,
    bootQuality: performance.getEntriesByName('sen:boot-image', 'mark')[0]?.detail?.quality,
    previewMarks: performance.getEntriesByName('sen:first-preview', 'mark').length,
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
  // The viewer's own requests (the checks below ask for more).
  const seen = [...requests];
  ctx.assert(readerInitiators[0] === 'parser', `reader chunk preloaded by the page (${readerInitiators})`);
  const enc = encodeURIComponent(uid);
  ctx.assert(
    r.preloads.includes(`/dicom-web/studies/${enc}/series`) &&
      r.preloads.includes(`/dicom-web/studies?StudyInstanceUID=${enc}&includefield=00081030&includefield=00080061`),
    `the page preloads the study's first requests (${JSON.stringify(r.preloads)})`,
  );
  ctx.assert(seriesInitiators.length === 1 && seriesInitiators[0] === 'parser', `series list from the page's preload (${seriesInitiators})`);
  ctx.assert(
    r.previewAsked !== undefined && r.bootImage !== undefined && r.readerRunning !== undefined &&
      r.previewAsked < r.readerRunning && r.bootImage < r.readerRunning,
    `boot image asked for and shown before the reader's code ran (${JSON.stringify(r)})`,
  );
  ctx.assert(
    r.bootQuality === 'full' && r.previewMarks === 0 && /\?accept=image\/png$/.test(r.bootUrl ?? ''),
    `fast link: the boot image is the lossless PNG, not a preview (${JSON.stringify(r)})`,
  );
  // The boot image is the first image's stored frame through its own window.
  const faithful = await page.evaluate(async (bootUrl) => {
    const png = await createImageBitmap(await (await fetch(bootUrl)).blob());
    const c = new OffscreenCanvas(png.width, png.height);
    const g = c.getContext('2d');
    g.drawImage(png, 0, 0);
    const shown = g.getImageData(0, 0, png.width, png.height).data;
    const series = bootUrl.replace(/\/rendered\?.*$/, '');
    const meta = await (await fetch(`${series}/metadata`)).json();
    const v = (ds, tag) => ds[tag]?.Value?.[0];
    const first = [...meta].sort((a, b) => (v(a, '00200013') ?? 0) - (v(b, '00200013') ?? 0))[0];
    const rows = v(first, '00280010');
    const cols = v(first, '00280011');
    const signed = v(first, '00280103') === 1;
    const slope = v(first, '00281053') ?? 1;
    const intercept = v(first, '00281052') ?? 0;
    const wc = v(first, '00281050');
    const ww = v(first, '00281051');
    const res = await fetch(`${series}/instances/${v(first, '00080018')}/frames/1`, {
      headers: { Accept: 'multipart/related; type="application/octet-stream"' },
    });
    const boundary = /boundary="?([^";]+)"?/.exec(res.headers.get('content-type'))[1];
    const body = new Uint8Array(await res.arrayBuffer());
    let start = 0;
    for (let i = 0; i + 3 < body.length; i++) {
      if (body[i] === 13 && body[i + 1] === 10 && body[i + 2] === 13 && body[i + 3] === 10) {
        start = i + 4;
        break;
      }
    }
    const px = new DataView(body.buffer, start, rows * cols * 2);
    let worst = 0;
    for (let i = 0; i < rows * cols; i++) {
      const raw = signed ? px.getInt16(i * 2, true) : px.getUint16(i * 2, true);
      const x = raw * slope + intercept;
      const lo = wc - 0.5 - (ww - 1) / 2;
      const hi = wc - 0.5 + (ww - 1) / 2;
      const want = x <= lo ? 0 : x > hi ? 255 : ((x - (wc - 0.5)) / (ww - 1) + 0.5) * 255;
      worst = Math.max(worst, Math.abs(shown[i * 4] - want));
    }
    return { size: [png.width, png.height], frame: [cols, rows], window: [wc, ww], worst };
  }, r.bootUrl);
  ctx.log(`boot image against the stored frame: ${JSON.stringify(faithful)}`);
  ctx.assert(
    faithful.size[0] === faithful.frame[0] && faithful.size[1] === faithful.frame[1] && faithful.worst <= 1,
    `the boot image is the stored frame through its window, at its own size (${JSON.stringify(faithful)})`,
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
  const count = (re) => seen.filter((u) => re.test(new URL(u).pathname)).length;
  ctx.assert(count(/\/studies\/[^/]+\/series$/) === 1, `series list asked once (${count(/\/studies\/[^/]+\/series$/)})`);
  // The page's script preloads are what the reader's import runs (one request each).
  ctx.assert(count(/\/assets\/reader-[^/]*\.js$/) === 1, `reader chunk asked once (${count(/\/assets\/reader-[^/]*\.js$/)})`);
  ctx.assert(count(/\/assets\/utilities-[^/]*\.js$/) === 1, `core chunk asked once (${count(/\/assets\/utilities-[^/]*\.js$/)})`);
  ctx.assert(count(/\/series\/[^/]+\/metadata$/) === 1, `series metadata asked once (${count(/\/series\/[^/]+\/metadata$/)})`);
  const codecs = seen.filter((u) => /openjpeg|openjph|charls|jpegxl/i.test(u));
  ctx.assert(codecs.length === 0, `no JPEG 2000 / HTJ2K / JPEG-LS / JPEG XL decoder fetched: ${codecs}`);
  ctx.assert(r.mode === 'full' && r.quality === 'full' && r.badgeHidden === true, `fast link: lossless, no badge (${JSON.stringify(r)})`);
  ctx.report('cold_boot_image_from_navigation_ms', r.bootImage);
  ctx.report('cold_first_image_from_navigation_ms', r.firstImage);
}
