// Progressive loading over a slow link (env PACS_TEST_BIGCT_STUDY, the
// 400-slice CT), on a phone viewport (390×844, touch) under Chromium's own
// network emulation (CDP Network.emulateNetworkConditions: 2 Mbit/s,
// 150 ms RTT). Checked, not timed: a cold start shows the first image's
// preview before the reader's code has arrived; the reader shows previews
// first ("preview" badge, the image on screen is a preview), then the
// lossless frame replaces it (badge "full quality", the image on screen is
// the lossless one, its pixels differ from the preview's); the JPEG 2000 /
// JPEG-LS / JPEG XL decoders are never fetched for this uncompressed study;
// the data saver keeps previews until the reader stops on a slice. Times go
// to the report (the benchmark is bench/viewer-cold.sh).
const LINK = { offline: false, latency: 150, downloadThroughput: (2e6 / 8), uploadThroughput: (2e6 / 8), connectionType: 'cellular4g' };

async function slowPage(ctx, extra = {}) {
  const page = await ctx.newPage({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true, locale: 'en-US', ...extra });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  await cdp.send('Network.emulateNetworkConditions', LINK);
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  return { page, requests };
}

const state = () => {
  const pane = document.querySelector('.rd-pane');
  const s = window.senQuality?.stats;
  return {
    quality: pane?.dataset.quality ?? '',
    image: pane?.dataset.qualityImage ?? '',
    badge: pane?.querySelector('.rd-quality')?.textContent ?? '',
    badgeHidden: pane?.querySelector('.rd-quality')?.hidden ?? true,
    mode: window.senQuality?.mode,
    previews: s?.previews ?? 0,
    full: s?.full ?? 0,
  };
};

export default async function (ctx) {
  const uid = process.env.PACS_TEST_BIGCT_STUDY;
  if (!uid) {
    ctx.log('PACS_TEST_BIGCT_STUDY not set: nothing to check');
    return;
  }
  const url = `${ctx.baseUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`;

  // 1. Progressive: boot preview, reader preview, then lossless.
  {
    const { page, requests } = await slowPage(ctx);
    await page.goto(url);
    await page.waitForSelector('.boot-preview', { timeout: 60000 });
    const bootBadge = await page.locator('.boot-badge').textContent();
    ctx.assert(bootBadge === 'Preview', `boot badge says preview (${bootBadge})`);
    ctx.assert(!(await page.evaluate(() => !!window.senQuality)), 'the boot preview came before the reader code');
    await ctx.screenshot(page, 'boot-preview');
    await page.waitForFunction(() => document.querySelector('.rd-pane')?.dataset.quality === 'preview', null, { timeout: 120000 });
    const p = await page.evaluate(state);
    ctx.assert(p.mode === 'progressive', `slow link → progressive mode (${p.mode})`);
    ctx.assert(p.badge === 'Preview' && !p.badgeHidden, `badge shows Preview (${JSON.stringify(p)})`);
    const previewPixels = await page.evaluate(() => window.senQuality.pixelSum());
    await ctx.screenshot(page, 'reader-preview');
    // Lossless replaces the preview on screen, the current slice first.
    await page.waitForFunction(() => document.querySelector('.rd-pane')?.dataset.quality === 'full', null, { timeout: 180000 });
    const f = await page.evaluate(state);
    ctx.assert(f.badge === 'Full quality', `badge shows Full quality (${JSON.stringify(f)})`);
    ctx.assert(f.image === p.image, 'the same slice, now lossless');
    ctx.assert(f.previews >= 1 && f.full >= 1, `previews then lossless (${JSON.stringify(f)})`);
    const fullPixels = await page.evaluate(() => window.senQuality.pixelSum());
    ctx.assert(previewPixels !== fullPixels, 'the lossless pixels differ from the preview');
    await ctx.screenshot(page, 'reader-full');
    const times = await page.evaluate(() => Object.fromEntries(
      performance.getEntriesByType('mark').filter((m) => m.name.startsWith('sen:')).map((m) => [m.name, Math.round(m.startTime)]),
    ));
    ctx.report('slowlink_marks', times);
    const codecs = requests.filter((r) => /openjpeg|openjph|charls|jpegxl/i.test(r));
    ctx.assert(codecs.length === 0, `no JPEG 2000 / JPEG-LS / JPEG XL decoder fetched: ${codecs}`);
    await page.context().close();
  }

  // 2. Data saver: previews only, until the reader stops on a slice.
  {
    const { page } = await slowPage(ctx);
    await page.addInitScript(() => localStorage.setItem('sen.dataSaver', '1'));
    await page.goto(url);
    await page.waitForFunction(() => document.querySelector('.rd-pane')?.dataset.quality === 'preview', null, { timeout: 120000 });
    const s = await page.evaluate(state);
    ctx.assert(s.mode === 'saver', `data saver mode (${s.mode})`);
    ctx.assert(await page.locator('.rd-saver').getAttribute('aria-pressed') === 'true', 'the switch shows the saver on');
    // Stopping on the slice makes it lossless, and only it.
    await page.waitForFunction(() => document.querySelector('.rd-pane')?.dataset.quality === 'full', null, { timeout: 120000 });
    await page.waitForTimeout(3000);
    const after = await page.evaluate(state);
    ctx.assert(after.full === 1, `only the slice on screen became lossless (${JSON.stringify(after)})`);
    // The setting persists; switching it off restores progressive loading.
    await page.locator('.rd-saver').click();
    ctx.assert(await page.evaluate(() => localStorage.getItem('sen.dataSaver')) === null, 'saver switched off');
    await page.context().close();
  }
}
