// Cine of the multi-frame ultrasound (24 frames, Cine Rate 25), the MR
// study's automatic window and its preset list, and the language switch.
import { findStudy, openStudy, overlay, waitOverlay } from './reader.spec.mjs';

export default async function (ctx) {
  const us = await findStudy(ctx.baseUrl, { modality: 'US', description: 'Siêu âm tim – cine' });
  const page = await ctx.newPage({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  await openStudy(page, ctx.baseUrl, [us]);
  await waitOverlay(page, 'index', 'Frame: 1/24');
  ctx.assert((await page.locator('.rd-fps').inputValue()) === '25', 'cine speed from the Cine Rate (25 fps)');
  await ctx.screenshot(page, 'us-frame-1');

  // Play: frames advance on their own; stop: they stay.
  await page.locator('.rd-fps').fill('10');
  await page.locator('.rd-fps').dispatchEvent('change');
  await page.locator('button.rd-play').click();
  await page.waitForFunction(() => window.senViewer.panes()[0].index >= 4, null, { timeout: 10000 });
  await ctx.screenshot(page, 'us-playing');
  await page.locator('button.rd-play').click();
  const stopped = await page.evaluate(() => window.senViewer.panes()[0].index);
  await page.waitForTimeout(400);
  ctx.assert((await page.evaluate(() => window.senViewer.panes()[0].index)) === stopped, 'cine stopped');
  ctx.assert((await overlay(page, 'index')) === `Frame: ${stopped + 1}/24`, 'overlay shows the frame');
  // Looping: End then one more step with cine wraps to the first frame.
  await page.keyboard.press('End');
  await waitOverlay(page, 'index', 'Frame: 24/24');

  // MR: a window from the data, the presets offer Auto but no CT windows.
  const mr = await findStudy(ctx.baseUrl, { modality: 'MR', description: 'MR Sọ não – phantom' });
  await openStudy(page, ctx.baseUrl, [mr]);
  await waitOverlay(page, 'index', 'Im: 1/16');
  ctx.assert(/^W: \d+ L: \d+$/.test(await overlay(page, 'wl')), 'MR window shown');
  await page.locator('button[data-action="presets"]').click();
  ctx.assert((await page.locator('.rd-menu-item[data-key="lung"]').count()) === 0, 'no CT presets for MR');
  await page.locator('.rd-menu-item[data-key="auto"]').click();
  // The phantom's MR values span 0 .. 2600 on the ventricle slices; slice 1 has no ventricles: the max is the scalp (1400).
  const p = await page.evaluate(() => window.senViewer.panes()[0]);
  ctx.assert(p.ww > 1000 && p.ww <= 2700, `auto window spans the image (${p.ww}/${p.wc})`);
  await ctx.screenshot(page, 'mr-auto');

  // Vietnamese: the switch re-labels the overlay and the controls.
  await page.locator('button[data-action="lang"]').click();
  await waitOverlay(page, 'index', 'Ảnh: 1/16');
  ctx.assert((await page.locator('button[data-tool="length"]').getAttribute('title')) === 'Đo chiều dài', 'tool titles in Vietnamese');
  await ctx.screenshot(page, 'mr-vietnamese');
  await page.locator('button[data-action="lang"]').click();
  await waitOverlay(page, 'index', 'Im: 1/16');
}
