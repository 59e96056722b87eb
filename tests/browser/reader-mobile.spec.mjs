// The reading view on a phone (390×844, touch): toolbar at the bottom, rail
// as a drawer, one-finger swipe scrolls, pinch zooms, two fingers pan.
// Touches are real touch events dispatched through the DevTools protocol.
import { findStudy, waitOverlay } from './reader.spec.mjs';

async function touch(cdp, type, points) {
  await cdp.send('Input.dispatchTouchEvent', {
    type,
    touchPoints: points.map(([x, y], i) => ({ x, y, id: i, radiusX: 4, radiusY: 4, force: 1 })),
  });
}

/** Moves touch points from `from` to `to` (arrays of [x, y]) in `steps` steps. */
async function gesture(cdp, page, from, to, steps = 12) {
  await touch(cdp, 'touchStart', from);
  for (let s = 1; s <= steps; s++) {
    const pts = from.map(([x, y], i) => [x + ((to[i][0] - x) * s) / steps, y + ((to[i][1] - y) * s) / steps]);
    await touch(cdp, 'touchMove', pts);
    await page.waitForTimeout(16);
  }
  await touch(cdp, 'touchEnd', []);
}

export default async function (ctx) {
  const uid = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT Đầu – phantom' });
  const page = await ctx.newPage({
    viewport: { width: 390, height: 844 },
    hasTouch: true,
    isMobile: true,
    deviceScaleFactor: 3,
    locale: 'en-US',
  });
  await page.goto(`${ctx.baseUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`);
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 30000 });
  await page.waitForFunction(() => window.senViewer.toolsReady(), null, { timeout: 30000 });
  await waitOverlay(page, 'index', 'Im: 1/24');
  await ctx.screenshot(page, 'phone-opened');

  // One-handed layout: the toolbar sits at the bottom of the screen, the viewport fills the middle.
  const tools = await page.locator('.rd-tools').boundingBox();
  ctx.assert(tools && tools.y + tools.height >= 844 - 1 && tools.y > 844 * 0.75, `toolbar at the bottom (${JSON.stringify(tools)})`);
  const vpBox = await page.locator('.rd-vp').first().boundingBox();
  ctx.assert(vpBox.width >= 380 && vpBox.height >= 500, `viewport fills the screen (${JSON.stringify(vpBox)})`);
  ctx.assert((await page.evaluate(() => window.senViewer.tool())) === 'scroll', 'the default touch tool scrolls');
  // The rail is a drawer: hidden, opened by its button, closed after choosing a series.
  ctx.assert(!(await page.locator('.rd-thumb').first().isVisible()), 'rail hidden at first');
  await page.locator('button[data-action="rail"]').tap();
  await page.waitForTimeout(400);
  const thumb = await page.locator('.rd-thumb').first().boundingBox();
  ctx.assert(thumb && thumb.y < 844 && thumb.y > 300, `rail drawer open within reach (${JSON.stringify(thumb)})`);
  await ctx.screenshot(page, 'phone-rail');
  await page.locator('.rd-thumb').first().tap();
  await page.waitForTimeout(400);

  const cdp = await page.context().newCDPSession(page);
  const cx = vpBox.x + vpBox.width / 2;
  const cy = vpBox.y + vpBox.height / 2;

  // Swipe down with one finger: the stack scrolls forwards.
  await gesture(cdp, page, [[cx, cy - 150]], [[cx, cy + 150]], 16);
  await page.waitForTimeout(300);
  const afterSwipe = await page.evaluate(() => window.senViewer.panes()[0].index);
  ctx.assert(afterSwipe !== 0, `one-finger swipe scrolled (index ${afterSwipe})`);
  const shown = await page.locator('[data-ov="index"]').first().innerText();
  ctx.assert(shown === `Im: ${afterSwipe + 1}/24`, `overlay shows the swiped-to image (${shown})`);
  await ctx.screenshot(page, 'phone-swiped');

  // Pinch out: zoom grows, the overlay says so.
  const zoom0 = await page.evaluate(() => window.senViewer.panes()[0].zoom);
  await gesture(cdp, page, [[cx - 40, cy], [cx + 40, cy]], [[cx - 150, cy], [cx + 150, cy]], 16);
  await page.waitForTimeout(300);
  const zoom1 = await page.evaluate(() => window.senViewer.panes()[0].zoom);
  ctx.log('zoom', zoom0, '→', zoom1);
  ctx.assert(zoom1 > zoom0 * 1.3, `pinch-out zoomed in (${zoom0} → ${zoom1})`);
  const zoomText = await page.locator('[data-ov="zoom"]').first().innerText();
  ctx.assert(zoomText === `Zoom: ${zoom1.toFixed(2)}×`, `overlay shows the zoom (${zoomText})`);
  ctx.report('pinch_zoom', zoom1);
  await ctx.screenshot(page, 'phone-pinched');

  // Two fingers moving together pan the image (the image centre moves on screen).
  const c0 = await page.evaluate(() => window.senViewer.imageToClient(0, 128, 128));
  await gesture(cdp, page, [[cx - 60, cy - 100], [cx + 60, cy - 100]], [[cx - 60, cy + 20], [cx + 60, cy + 20]], 16);
  await page.waitForTimeout(300);
  const c1 = await page.evaluate(() => window.senViewer.imageToClient(0, 128, 128));
  ctx.log('pan', c0, '→', c1);
  ctx.assert(c1[1] - c0[1] > 40, `two-finger drag panned down (${c0[1]} → ${c1[1]})`);
  await ctx.screenshot(page, 'phone-panned');

  // Tools in the bottom bar work by touch: the lung preset.
  await page.locator('button[data-action="presets"]').tap();
  await page.locator('.rd-menu-item[data-key="lung"]').tap();
  await waitOverlay(page, 'wl', 'W: 1500 L: -600');
  await page.locator('button[data-action="reset"]').tap();
  await page.waitForFunction(() => Math.abs(window.senViewer.panes()[0].zoom - 1) < 0.01);
  await ctx.screenshot(page, 'phone-reset');

  // One finger draws with the current tool: a length across the body (200 mm).
  await page.locator('button[data-tool="length"]').tap();
  const a = await page.evaluate(() => window.senViewer.imageToClient(0, 128, 28));
  const b = await page.evaluate(() => window.senViewer.imageToClient(0, 128, 228));
  await gesture(cdp, page, [a], [b], 20);
  await page.waitForFunction(() => window.senViewer.measurements().some((m) => m.length !== undefined));
  await page.waitForTimeout(200);
  const texts = await page.locator('.rd-pane svg text tspan').allTextContents();
  const label = texts.map((t) => t.match(/^([\d.]+) mm$/)).find(Boolean);
  ctx.assert(label, `length label drawn by touch (${JSON.stringify(texts)})`);
  // A CSS pixel is ~0.65 mm here and touch points are whole pixels.
  ctx.assertClose(Number(label[1]), 200, 2, 'length drawn with a finger (mm)');
  await ctx.screenshot(page, 'phone-length');
}
