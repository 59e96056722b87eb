// Cold start of the reading view on localhost (env PACS_TEST_BIGCT_STUDY,
// the 400-slice uncompressed CT): a new browser context with the HTTP cache
// disabled. Checked: the reader's chunk is fetched through the page's
// `modulepreload` (viewer.html), not after the entry script ran; the series
// list and the displayed series' metadata are each asked for once (the
// entry chunk's early requests are reused by the reader); no JPEG 2000,
// HTJ2K, JPEG-LS or JPEG XL decoder is fetched for an uncompressed study; on
// a fast link the image on screen is lossless and no quality badge shows.
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
  cdp.on('Network.requestWillBeSent', (e) => {
    if (/\/assets\/reader-[^/]*\.js$/.test(new URL(e.request.url).pathname)) readerInitiators.push(e.initiator.type);
  });
  await page.goto(`${ctx.baseUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`);
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 60000 });
  // Let the prefetch start, so that a late duplicate request would show.
  await page.waitForTimeout(500);
  const r = await page.evaluate(() => ({
    firstImage: performance.getEntriesByName('sen:first-image', 'mark')[0]?.startTime,
    quality: document.querySelector('.rd-pane')?.dataset.quality,
    badgeHidden: document.querySelector('.rd-pane .rd-quality')?.hidden,
    mode: window.senQuality?.mode,
  }));
  ctx.assert(readerInitiators[0] === 'parser', `reader chunk preloaded by the page (${readerInitiators})`);
  const count = (re) => requests.filter((u) => re.test(new URL(u).pathname)).length;
  ctx.assert(count(/\/studies\/[^/]+\/series$/) === 1, `series list asked once (${count(/\/studies\/[^/]+\/series$/)})`);
  ctx.assert(count(/\/series\/[^/]+\/metadata$/) === 1, `series metadata asked once (${count(/\/series\/[^/]+\/metadata$/)})`);
  const codecs = requests.filter((u) => /openjpeg|openjph|charls|jpegxl/i.test(u));
  ctx.assert(codecs.length === 0, `no JPEG 2000 / HTJ2K / JPEG-LS / JPEG XL decoder fetched: ${codecs}`);
  ctx.assert(r.mode === 'full' && r.quality === 'full' && r.badgeHidden === true, `fast link: lossless, no badge (${JSON.stringify(r)})`);
  ctx.report('cold_first_image_from_navigation_ms', r.firstImage);
}
