// AI results and saved work in the reader (run by tests/viewer_derived.rs over
// the objects of tests/derived/make_objects.py):
// - the SEG's segments are drawn over their source slices in their
//   recommended colours, and hiding a segment removes it;
// - the TID 1500 SR's measurement is listed, jumps to its image and is drawn
//   there (hit-tested at the expected point);
// - derived series are not in the series strip;
// - a length, a rectangle ROI and a key image are saved (STOW) and come back
//   after a reload.
// With PACS_TEST_USERS="a,b,c" (sign-in on): user a saves, user b (another
// radiologist) sees the work, user c (no store permission) is told why the
// save failed.

import { dragImage, imagePoint } from '../reader.spec.mjs';

const fixture = JSON.parse(process.env.PACS_TEST_DERIVED ?? '{}');

async function open(ctx, user) {
  const page = await ctx.newPage({ locale: 'en-US', viewport: { width: 1280, height: 800 } });
  const url = `${ctx.baseUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(fixture.study)}`;
  await page.goto(url);
  if (user) {
    await page.waitForURL((u) => u.pathname === '/login');
    await page.fill('#username', user);
    await page.fill('#password', process.env.PACS_TEST_PASSWORD);
    await Promise.all([page.waitForURL((u) => u.pathname === '/viewer'), page.click('button[type=submit]')]);
  }
  await ready(page);
  return page;
}

async function ready(page) {
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 60000 });
  await page.waitForFunction(() => window.senViewer.derived?.().loaded === true, null, { timeout: 60000 });
}

/** Shows slice `i` of pane 0 and waits until it is rendered. */
async function slice(page, i) {
  await page.evaluate((n) => window.senViewer.scrollTo(0, n), i);
  await page.waitForFunction((n) => window.senViewer.panes()[0].index === n, i);
  await page.waitForTimeout(300);
}

/** The colour on screen at image pixel (col, row) of pane 0. */
async function pixel(page, col, row) {
  const p = await imagePoint(page, col, row);
  return page.evaluate(([x, y]) => {
    const canvas = document.querySelector('.rd-pane canvas');
    const r = canvas.getBoundingClientRect();
    const sx = canvas.width / r.width;
    const sy = canvas.height / r.height;
    const d = canvas.getContext('2d').getImageData(Math.round((x - r.left) * sx), Math.round((y - r.top) * sy), 1, 1).data;
    return [d[0], d[1], d[2]];
  }, [p.x, p.y]);
}

const isGrey = ([r, g, b]) => Math.abs(r - g) < 12 && Math.abs(g - b) < 12;

async function displayChecks(ctx, page) {
  // From opening the study to every derived object on screen (a number to watch, not a limit).
  ctx.report('derived_loaded_ms', await page.evaluate(() => {
    const [open] = performance.getEntriesByName('sen:study-open');
    const [done] = performance.getEntriesByName('sen:derived-loaded');
    return done.startTime - open.startTime;
  }));
  // Derived series stay out of the series strip.
  const strip = await page.locator('.rd-thumb').evaluateAll((els) => els.map((e) => e.dataset.seriesUid));
  ctx.assert(strip.includes(fixture.ctSeries), `the CT is in the strip: ${strip}`);
  ctx.assert(!strip.includes(fixture.segSeries) && !strip.includes(fixture.srSeries), `no SEG/SR thumbnails: ${strip}`);

  // The SEG panel: two segments with their labels.
  const segRows = page.locator('.dv-seg .dv-segment');
  ctx.assert((await segRows.count()) === 2, 'two segments listed');
  const state = await page.evaluate(() => window.senViewer.derived());
  const segs = state.segmentations[0].segments;
  ctx.assert(segs[0].label === 'Lesion A' && segs[1].label === 'Lesion B', JSON.stringify(segs));
  // Recommended CIELab colours come back as the sRGB they were made from.
  ctx.assertClose(segs[0].rgb[0], 255, 3, 'segment 1 red');
  ctx.assertClose(segs[0].rgb[1], 0, 3, 'segment 1 green');
  ctx.assertClose(segs[1].rgb[1], 200, 3, 'segment 2 green');

  const [a, b] = fixture.segments;
  const aMid = [(a.cols[0] + a.cols[1]) / 2, (a.rows[0] + a.rows[1]) / 2];
  const bMid = [(b.cols[0] + b.cols[1]) / 2, (b.rows[0] + b.rows[1]) / 2];
  await slice(page, 0);
  const before = await pixel(page, ...aMid);
  ctx.assert(isGrey(before), `slice 0 has no segment: ${before}`);
  await slice(page, fixture.segSlices[1]);
  await ctx.screenshot(page, 'seg-overlay');
  const red = await pixel(page, ...aMid);
  ctx.assert(red[0] > red[1] + 40 && red[0] > red[2] + 40, `segment A is red on screen: ${red}`);
  const green = await pixel(page, ...bMid);
  ctx.assert(green[1] > green[0] + 30 && green[1] > green[2] + 30, `segment B is green on screen: ${green}`);
  ctx.report('seg_pixel_red', red);

  // Hiding segment A removes it; segment B stays.
  await page.locator('.dv-seg .dv-segment[data-segment="1"] input.dv-vis').uncheck();
  await page.waitForTimeout(400);
  const hidden = await pixel(page, ...aMid);
  ctx.assert(isGrey(hidden), `segment A hidden: ${hidden}`);
  const still = await pixel(page, ...bMid);
  ctx.assert(still[1] > still[0] + 30, `segment B still shown: ${still}`);
  await page.locator('.dv-seg .dv-segment[data-segment="1"] input.dv-vis').check();
  await page.waitForTimeout(400);
  // Colour and opacity per segment: blue, then fully transparent.
  const setInput = (cls, value) => page.locator(`.dv-seg .dv-segment[data-segment="1"] input.${cls}`).evaluate((e, v) => {
    e.value = v;
    e.dispatchEvent(new Event('input'));
  }, value);
  await setInput('dv-colour', '#0000ff');
  await page.waitForTimeout(400);
  const blue = await pixel(page, ...aMid);
  ctx.assert(blue[2] > blue[0] + 40 && blue[2] > blue[1] + 40, `segment A recoloured blue: ${blue}`);
  await setInput('dv-opacity', '0');
  await page.waitForTimeout(400);
  const clear = await pixel(page, ...aMid);
  ctx.assert(isGrey(clear), `segment A at opacity 0: ${clear}`);
  await setInput('dv-opacity', '50');

  // The SR: listed with its finding and value; clicking goes to its image.
  await slice(page, 0);
  const item = page.locator('.dv-sr .dv-item').first();
  const itemText = await item.innerText();
  ctx.assert(/Nodule/.test(itemText) && /Length: 80 mm/.test(itemText), `SR item: ${itemText}`);
  await item.click();
  await page.waitForFunction((n) => window.senViewer.panes()[0].index === n, fixture.srSlice);
  await page.waitForTimeout(300);
  await ctx.screenshot(page, 'sr-length');
  // Drawn where its SCOORD says: the middle of the polyline hits it.
  const uid = await item.getAttribute('data-annotation-uid');
  ctx.assert(uid, 'the SR measurement is drawn');
  const [p0, p1] = fixture.srPoints;
  const mid = await imagePoint(page, (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2);
  const hit = await page.evaluate(([x, y]) => window.senViewer.derivedHit(x, y), [mid.x, mid.y]);
  ctx.assert(hit === uid, `hit-test at the line's middle: ${hit} (expected ${uid})`);
  const off = await imagePoint(page, (p0[0] + p1[0]) / 2, p0[1] + 30);
  const miss = await page.evaluate(([x, y]) => window.senViewer.derivedHit(x, y), [off.x, off.y]);
  ctx.assert(miss !== uid, '30 pixels away does not hit it');
  // A free-form Comprehensive SR (no template): its finding, impression and
  // diameter are listed; the diameter is drawn on its own image.
  const findings = page.locator('.dv-sr', { hasText: 'Cyst' });
  const findingsText = await findings.innerText();
  ctx.assert(/Finding: Cyst/.test(findingsText) && /Impression: Simple cyst/.test(findingsText), `findings: ${findingsText}`);
  const diameter = findings.locator('.dv-item', { hasText: 'Diameter: 60 mm' });
  await diameter.click();
  await page.waitForFunction((n) => window.senViewer.panes()[0].index === n, fixture.findingsSlice);
  await page.waitForTimeout(300);
  const [q0, q1] = fixture.findingsPoints;
  const dmid = await imagePoint(page, (q0[0] + q1[0]) / 2, (q0[1] + q1[1]) / 2);
  const dhit = await page.evaluate(([x, y]) => window.senViewer.derivedHit(x, y), [dmid.x, dmid.y]);
  ctx.assert(dhit && dhit === (await diameter.getAttribute('data-annotation-uid')), `diameter hit-test: ${dhit}`);
  // It is not one of the reader's own measurements, and clearing those keeps it.
  await page.locator('button[data-action="trash"]').click();
  const after = await page.evaluate(([x, y]) => window.senViewer.derivedHit(x, y), [dmid.x, dmid.y]);
  ctx.assert(after === dhit, `the report's drawing survives "clear measurements": ${after}`);
  ctx.assert((await page.evaluate(() => window.senViewer.measurements().length)) === 0, 'AI measurement is not the reader\'s');
}

/** Draws a length and a rectangle on `drawSlice`, marks `keySlice` as key, saves. */
async function drawAndSave(ctx, page, keySlice = 5, drawSlice = 2) {
  const before = (await page.evaluate(() => window.senViewer.measurements())).length;
  await slice(page, drawSlice);
  await page.locator('button[data-tool="length"]').click();
  await dragImage(page, [30, 30], [90, 30]);
  await page.locator('button[data-tool="rect"]').click();
  await dragImage(page, [120, 20], [160, 50]);
  await page.waitForFunction((n) => window.senViewer.measurements().filter((m) => m.length !== undefined || m.mean !== undefined).length >= n + 2, before);
  const keys = (await page.evaluate(() => window.senViewer.derived().keyImages)).length;
  await slice(page, keySlice);
  await page.locator('button[data-action="key-image"]').click();
  await page.waitForFunction((n) => window.senViewer.derived().keyImages.length === n + 1, keys);
  await page.locator('button[data-action="save-work"]').click();
  await page.waitForFunction(() => /Saved|Not saved/.test(window.senViewer.derived().status), null, { timeout: 30000 });
  return page.evaluate(() => window.senViewer.derived().status);
}

async function reloadedChecks(ctx, page) {
  await page.waitForFunction(() => window.senViewer.measurements().length === 2, null, { timeout: 30000 });
  const ms = await page.evaluate(() => window.senViewer.measurements());
  const len = ms.find((m) => m.tool === 'Length');
  const rect = ms.find((m) => m.tool === 'RectangleROI');
  ctx.assert(len && rect, `length and rectangle back: ${JSON.stringify(ms)}`);
  ctx.assertClose(len.length, 60, 0.5, 'saved length (mm)');
  const st = await page.evaluate(() => window.senViewer.derived());
  ctx.assert(st.keyImages.length === 1 && /frames\/1$/.test(st.keyImages[0]), `key image back: ${st.keyImages}`);
  await page.locator('.dv-keys .dv-item').first().click();
  await page.waitForFunction(() => window.senViewer.panes()[0].index === 5);
}

export default async function (ctx) {
  ctx.assert(fixture.study, 'PACS_TEST_DERIVED names the study');
  const users = (process.env.PACS_TEST_USERS ?? '').split(',').filter(Boolean);
  if (users.length === 0) {
    const page = await open(ctx);
    await displayChecks(ctx, page);
    const status = await drawAndSave(ctx, page);
    ctx.assert(status === 'Saved to the archive.', `saved: ${status}`);
    await page.reload();
    await ready(page);
    await reloadedChecks(ctx, page);
    await ctx.screenshot(page, 'reloaded');
    return;
  }
  const [writer, reader, refused] = users;
  const a = await open(ctx, writer);
  const status = await drawAndSave(ctx, a);
  ctx.assert(status === 'Saved to the archive.', `saved by ${writer}: ${status}`);
  const b = await open(ctx, reader);
  await reloadedChecks(ctx, b);
  if (refused) {
    const c = await open(ctx, refused);
    const denied = await drawAndSave(ctx, c, 4, 6);
    ctx.assert(/may not store objects/.test(denied), `a role without store permission is told: ${denied}`);
  }
}
