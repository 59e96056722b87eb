// Reading the CT phantom on a desktop: scrolling, a window preset, a length
// across the body and ROI statistics over inserts of known HU. Expected
// values come from the phantom's geometry (sample-data/src/phantom.rs):
// 256×256 slices, 1 mm pixels, slice k at z = 5k mm; body disk radius 100
// around (128,128) at 0 HU; fat disk radius 15 around (80,128) at -100 HU;
// contrast disk radius 15 around (176,128) at 200 HU; no noise.
//
// The named exports are helpers that the other reader*.spec.mjs import.

/** StudyInstanceUID of the demo study whose description starts with `prefix` (QIDO-RS). */
export async function findStudy(baseUrl, { modality, description, patientId }) {
  const q = new URLSearchParams({ includefield: '00081030' });
  if (modality) q.set('ModalitiesInStudy', modality);
  if (patientId) q.set('PatientID', patientId);
  const r = await fetch(`${baseUrl}/dicom-web/studies?${q}`, { headers: { Accept: 'application/dicom+json' } });
  if (!r.ok) throw new Error(`QIDO ${r.status}`);
  const rows = await r.json();
  const hit = rows.find((s) => (s['00081030']?.Value?.[0] ?? '') === description);
  if (!hit) throw new Error(`no study "${description}" among ${rows.length}`);
  return hit['0020000D'].Value[0];
}

/** Opens the reading view and waits for its first image and its tools
 * (a chunk loaded once the first image is drawn). */
export async function openStudy(page, baseUrl, uids) {
  const q = uids.map((u) => `StudyInstanceUIDs=${encodeURIComponent(u)}`).join('&');
  await page.goto(`${baseUrl}/viewer?${q}`);
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 30000 });
  await page.waitForFunction(() => window.senViewer.toolsReady(), null, { timeout: 30000 });
  await page.waitForFunction(() => window.senViewer.panes()[0]?.count > 0);
}

/** The text of overlay line `key` (e.g. `index`, `position`, `wl`, `zoom`) in pane `pane`. */
export async function overlay(page, key, pane = 0) {
  return page.locator('.rd-pane').nth(pane).locator(`[data-ov="${key}"]`).innerText();
}

/** Waits until overlay line `key` of `pane` equals `expected`. */
export async function waitOverlay(page, key, expected, pane = 0) {
  await page.waitForFunction(
    ([k, e, p]) => document.querySelectorAll('.rd-pane')[p]?.querySelector(`[data-ov="${k}"]`)?.textContent === e,
    [key, expected, pane],
    { timeout: 10000 },
  ).catch(async () => {
    throw new Error(`overlay ${key} of pane ${pane}: "${await overlay(page, key, pane).catch(() => '?')}", expected "${expected}"`);
  });
}

/** Page coordinates of image pixel (column, row) in `pane`. */
export async function imagePoint(page, col, row, pane = 0) {
  const p = await page.evaluate(([pn, c, r]) => window.senViewer.imageToClient(pn, c, r), [pane, col, row]);
  if (!p) throw new Error('no image in the viewport');
  return { x: p[0], y: p[1] };
}

/** Drags with the mouse from one image pixel to another. */
export async function dragImage(page, from, to, pane = 0) {
  const a = await imagePoint(page, from[0], from[1], pane);
  const b = await imagePoint(page, to[0], to[1], pane);
  await page.mouse.move(a.x, a.y);
  await page.mouse.down();
  await page.mouse.move((a.x + b.x) / 2, (a.y + b.y) / 2, { steps: 5 });
  await page.mouse.move(b.x, b.y, { steps: 5 });
  await page.mouse.up();
}

/** The on-image annotation labels (SVG text drawn by the measurement tools) of `pane`. */
export async function annotationTexts(page, pane = 0) {
  return page.locator('.rd-pane').nth(pane).locator('svg text tspan').allTextContents();
}

/** The first number in the label line starting with `prefix` (e.g. "Mean:"). */
export function labelNumber(texts, re) {
  for (const t of texts) {
    const m = t.match(re);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/** Asserts the patient direction letters shown at the four edges of `pane`. */
export async function expectOrientation(page, ctx, expected, what, pane = 0) {
  const sides = ['left', 'right', 'top', 'bottom'];
  const read = () => page.evaluate(([ss, p]) => {
    const root = document.querySelectorAll('.rd-pane')[p];
    return Object.fromEntries(ss.map((s) => [s, root?.querySelector(`[data-ov="orient-${s}"]`)?.textContent ?? '']));
  }, [sides, pane]);
  await page.waitForFunction(([ss, e, p]) => {
    const root = document.querySelectorAll('.rd-pane')[p];
    return ss.every((s) => root?.querySelector(`[data-ov="orient-${s}"]`)?.textContent === e[s]);
  }, [sides, expected, pane], { timeout: 5000 }).catch(() => undefined);
  const got = await read();
  ctx.assert(sides.every((s) => got[s] === expected[s]), `orientation markers ${what}: ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
  for (const s of sides) {
    if (expected[s]) ctx.assert(await page.locator('.rd-pane').nth(pane).locator(`[data-ov="orient-${s}"]`).isVisible(), `marker ${s} visible (${what})`);
  }
}

export default async function (ctx) {
  const uid = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT Đầu – phantom' });
  const page = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await openStudy(page, ctx.baseUrl, [uid]);
  await waitOverlay(page, 'index', 'Im: 1/24');
  ctx.assert((await overlay(page, 'patient')) === 'Nguyễn Văn An', 'patient name in the overlay');
  ctx.assert((await page.locator('.rd-thumb').count()) >= 1, 'series rail has a thumbnail');
  await ctx.screenshot(page, 'opened');

  // Keyboard: End, Home, then 11 × ArrowDown → image 12 at z = 55 mm.
  await page.locator('.rd-vp').first().hover();
  await page.keyboard.press('End');
  await waitOverlay(page, 'index', 'Im: 24/24');
  await page.keyboard.press('Home');
  await waitOverlay(page, 'index', 'Im: 1/24');
  for (let i = 0; i < 11; i++) await page.keyboard.press('ArrowDown');
  await waitOverlay(page, 'index', 'Im: 12/24');
  await waitOverlay(page, 'position', 'Loc: 55.0 mm');
  await ctx.screenshot(page, 'slice-12');

  // Mouse wheel: three notches down → image 15.
  for (let i = 0; i < 3; i++) {
    await page.mouse.wheel(0, 100);
    await page.waitForTimeout(80);
  }
  await waitOverlay(page, 'index', 'Im: 15/24');
  // Slider → image 5 (z = 20 mm); PageDown → +2 images (a tenth of 24).
  await page.locator('.rd-slider').fill('4');
  await waitOverlay(page, 'index', 'Im: 5/24');
  await waitOverlay(page, 'position', 'Loc: 20.0 mm');
  await page.keyboard.press('PageDown');
  await waitOverlay(page, 'index', 'Im: 7/24');
  ctx.assert((await page.locator('.rd-slider-label').innerText()) === '7/24', 'slider label follows');
  await ctx.screenshot(page, 'slider');

  // Back to image 12 (the lesion's slice) for the rest.
  await page.locator('.rd-slider').fill('11');
  await waitOverlay(page, 'index', 'Im: 12/24');

  // Preset: lung 1500 / -600, then bone 2000 / 300.
  await page.locator('button[data-action="presets"]').click();
  await page.locator('.rd-menu-item[data-key="lung"]').click();
  await waitOverlay(page, 'wl', 'W: 1500 L: -600');
  await ctx.screenshot(page, 'preset-lung');
  await page.locator('button[data-action="presets"]').click();
  await page.locator('.rd-menu-item[data-key="brain"]').click();
  await waitOverlay(page, 'wl', 'W: 80 L: 40');
  const voi = await page.evaluate(() => window.senViewer.panes()[0]);
  ctx.assertClose(voi.ww, 80, 0.01, 'window width after the brain preset');
  ctx.assertClose(voi.wc, 40, 0.01, 'window centre after the brain preset');
  await ctx.screenshot(page, 'preset-brain');
  // Keyboard: 8 = bone (2000/300); abdomen from the menu for the measurements.
  await page.keyboard.press('8');
  await waitOverlay(page, 'wl', 'W: 2000 L: 300');
  await page.locator('button[data-action="presets"]').click();
  await page.locator('.rd-menu-item[data-key="abdomen"]').click();
  await waitOverlay(page, 'wl', 'W: 400 L: 50');

  // Length across the body disk along column 128: pixel centres 28 → 228 = 200 mm.
  await page.locator('button[data-tool="length"]').click();
  await dragImage(page, [128, 28], [128, 228]);
  await page.waitForFunction(() => window.senViewer.measurements().some((m) => m.length !== undefined));
  await page.waitForTimeout(200);
  let texts = await annotationTexts(page);
  const length = labelNumber(texts, /^(-?[\d.]+) mm$/);
  ctx.log('length label', texts);
  ctx.assert(length !== undefined, `a length label is drawn (labels: ${JSON.stringify(texts)})`);
  ctx.assertClose(length, 200, 1.0, 'displayed length across the body (mm)');
  const panelLength = await page.locator('.rd-measure[data-tool="Length"] .rd-measure-value').first().innerText();
  ctx.assert(/^200(\.\d+)? mm$/.test(panelLength), `measurement panel shows the length (${panelLength})`);
  ctx.report('length_mm', length);
  await ctx.screenshot(page, 'length-body');

  // Ellipse ROI inside the fat disk (radius 10 around its centre; the tool
  // drags from the centre to a corner of the bounding box): mean -100 HU,
  // SD 0, area ≈ π·10² mm².
  await page.locator('button[data-tool="ellipse"]').click();
  await dragImage(page, [80, 128], [90, 138]);
  await page.waitForFunction(() => window.senViewer.measurements().some((m) => m.tool === 'EllipticalROI' && m.mean !== undefined));
  await page.waitForTimeout(200);
  texts = await annotationTexts(page);
  ctx.log('ellipse labels', texts);
  const fatMean = labelNumber(texts, /^Mean: (-?[\d.]+) HU$/);
  const fatSd = labelNumber(texts, /^SD: (-?[\d.]+) HU$/);
  const fatArea = labelNumber(texts, /^Area: ([\d.]+) mm²$/);
  ctx.assert(fatMean !== undefined && fatSd !== undefined && fatArea !== undefined, `ROI labels drawn: ${JSON.stringify(texts)}`);
  ctx.assertClose(fatMean, -100, 0.5, 'fat ROI mean (HU)');
  ctx.assertClose(fatSd, 0, 0.5, 'fat ROI SD (HU)');
  ctx.assertClose(fatArea, Math.PI * 100, 15, 'fat ROI area (mm²)');
  ctx.report('fat_roi_mean_hu', fatMean);
  await ctx.screenshot(page, 'roi-fat');

  // Rectangle ROI inside the contrast disk, 12 × 12 px: mean 200 HU, SD 0, area 144 mm².
  await page.locator('button[data-tool="rect"]').click();
  await dragImage(page, [170, 122], [182, 134]);
  await page.waitForFunction(() => window.senViewer.measurements().some((m) => m.tool === 'RectangleROI' && m.mean !== undefined));
  await page.waitForTimeout(200);
  const rect = await page.evaluate(() => window.senViewer.measurements().find((m) => m.tool === 'RectangleROI'));
  texts = await annotationTexts(page);
  ctx.assert(texts.includes('Mean: 200 HU'), `contrast ROI label "Mean: 200 HU" (labels: ${JSON.stringify(texts)})`);
  ctx.assert(texts.includes('SD: 0 HU'), 'contrast ROI label "SD: 0 HU"');
  // Mouse positions are whole CSS pixels (~0.3 mm here): allow a pixel per side.
  ctx.assertClose(rect.area, 144, 6, 'contrast ROI area (mm²)');
  await ctx.screenshot(page, 'roi-contrast');

  // Rectangle across the body edge (rows 118..138, columns 18..38: air and water):
  // mean strictly between -1000 and 0 and a large SD.
  await dragImage(page, [18, 118], [38, 138]);
  // Statistics are also computed while the drag is under way: wait for the
  // finished 20 × 20 px rectangle (about 400 mm²), not an intermediate one.
  await page.waitForFunction(() => window.senViewer.measurements().filter((m) => m.tool === 'RectangleROI' && m.mean !== undefined && m.area > 350).length === 1);
  const edge = await page.evaluate(() => window.senViewer.measurements().filter((m) => m.tool === 'RectangleROI')[1]);
  ctx.assert(edge.mean > -1000 && edge.mean < 0 && edge.stdDev > 100, `edge ROI mixes air and water (mean ${edge.mean}, SD ${edge.stdDev})`);
  await ctx.screenshot(page, 'roi-edge');

  // The measurement list: a click shows the image it was drawn on; one can be deleted.
  await page.locator('.rd-vp').first().hover();
  await page.keyboard.press('Home');
  await waitOverlay(page, 'index', 'Im: 1/24');
  // The annotation layer redraws on the frame after the image: wait for the
  // labels to go (a label that stays fails here after the timeout).
  const labelsGone = await page
    .waitForFunction(() => document.querySelectorAll('.rd-pane svg text').length === 0, null, { timeout: 5000 })
    .then(() => true, () => false);
  ctx.assert(labelsGone, 'no labels on another image');
  await page.locator('.rd-measure-jump').first().click();
  await waitOverlay(page, 'index', 'Im: 12/24');
  ctx.assert((await page.locator('.rd-measure').count()) === 4, 'four measurements listed');
  await page.locator('.rd-measure').nth(3).locator('.rd-measure-del').click();
  await page.waitForFunction(() => window.senViewer.measurements().length === 3);
  await page.waitForFunction(() => document.querySelectorAll('.rd-measure').length === 3);

  // Orientation markers: the phantom is axial (Image Orientation (Patient)
  // 1\0\0\0\1\0): rows point to the patient's left, columns to posterior, so
  // the left edge shows R, the right L, the top A, the bottom P. The fat insert
  // (patient right) is on the left of the screen.
  await expectOrientation(page, ctx, { left: 'R', right: 'L', top: 'A', bottom: 'P' }, 'axial, as acquired');
  const fatX = (await imagePoint(page, 80, 128)).x;
  const contrastX = (await imagePoint(page, 176, 128)).x;
  ctx.assert(fatX < contrastX, 'the fat insert (patient right) is left of the contrast insert');

  // Zoom, rotate, flip, invert, reset; overlays hide and show.
  await page.locator('button[data-action="rotate"]').click();
  await waitOverlay(page, 'rotation', 'Rot: 90°');
  // Rotated 90° clockwise: the patient's right (fat insert) is now at the top.
  await expectOrientation(page, ctx, { left: 'P', right: 'A', top: 'R', bottom: 'L' }, 'rotated 90° clockwise');
  const fatY = (await imagePoint(page, 80, 128)).y;
  const contrastY = (await imagePoint(page, 176, 128)).y;
  ctx.assert(fatY < contrastY, 'after the rotation the fat insert (patient right) is above the contrast insert');
  await page.locator('button[data-action="invert"]').click();
  await page.waitForFunction(() => window.senViewer.panes()[0].invert === true);
  await page.locator('button[data-action="flipH"]').click();
  // Rotated, then flipped left–right: anterior on the left.
  await expectOrientation(page, ctx, { left: 'A', right: 'P', top: 'R', bottom: 'L' }, 'rotated and flipped horizontally');
  await ctx.screenshot(page, 'rotated-inverted');
  await page.locator('button[data-action="reset"]').click();
  await page.waitForFunction(() => window.senViewer.panes()[0].invert === false && window.senViewer.panes()[0].rotation === 0);
  await expectOrientation(page, ctx, { left: 'R', right: 'L', top: 'A', bottom: 'P' }, 'after reset');
  // Flipped horizontally alone: the patient's left on the left; flipped vertically too: posterior at the top.
  await page.locator('button[data-action="flipH"]').click();
  await expectOrientation(page, ctx, { left: 'L', right: 'R', top: 'A', bottom: 'P' }, 'flipped horizontally');
  ctx.assert((await imagePoint(page, 80, 128)).x > (await imagePoint(page, 176, 128)).x, 'flipped: the fat insert is on the right');
  await page.locator('button[data-action="flipV"]').click();
  await expectOrientation(page, ctx, { left: 'L', right: 'R', top: 'P', bottom: 'A' }, 'flipped both ways');
  await ctx.screenshot(page, 'flipped');
  await page.locator('button[data-action="reset"]').click();
  await expectOrientation(page, ctx, { left: 'R', right: 'L', top: 'A', bottom: 'P' }, 'after the second reset');
  await page.locator('button[data-action="overlay"]').click();
  ctx.assert(!(await page.locator('[data-ov="index"]').first().isVisible()), 'overlays hidden');
  ctx.assert(!(await page.locator('[data-ov="orient-left"]').first().isVisible()), 'orientation markers hidden with the overlays');
  await page.locator('button[data-action="overlay"]').click();
  ctx.assert(await page.locator('[data-ov="index"]').first().isVisible(), 'overlays shown again');
  ctx.assert(await page.locator('[data-ov="orient-left"]').first().isVisible(), 'orientation markers shown again');

  // Angle of 90° (three points), after clearing the other measurements.
  await page.locator('button[data-action="trash"]').click();
  await page.waitForFunction(() => window.senViewer.measurements().length === 0);
  await page.locator('button[data-tool="angle"]').click();
  await dragImage(page, [60, 200], [160, 200]);
  const c = await imagePoint(page, 160, 100);
  await page.mouse.move(c.x, c.y, { steps: 5 });
  await page.mouse.down();
  await page.mouse.up();
  await page.waitForFunction(() => window.senViewer.measurements().some((m) => m.angle !== undefined));
  await page.waitForTimeout(200);
  texts = await annotationTexts(page);
  const angle = labelNumber(texts, /^([\d.]+) ?°$/);
  ctx.assert(angle !== undefined, `an angle label is drawn (${JSON.stringify(texts)})`);
  ctx.assertClose(angle, 90, 1, 'displayed angle (degrees)');
  await ctx.screenshot(page, 'angle');

  // Window/level by dragging: the window changes from the abdomen preset.
  await page.locator('button[data-tool="wl"]').click();
  const mid = await imagePoint(page, 128, 240);
  await page.mouse.move(mid.x, mid.y);
  await page.mouse.down();
  await page.mouse.move(mid.x + 80, mid.y + 30, { steps: 8 });
  await page.mouse.up();
  const wlText = await overlay(page, 'wl');
  ctx.assert(wlText !== 'W: 400 L: 50' && /^W: \d+ L: -?\d+$/.test(wlText), `W/L changed by dragging (${wlText})`);
  // Zoom by dragging with the zoom tool, then pan with the pan tool.
  await page.locator('button[data-tool="zoom"]').click();
  await page.mouse.move(mid.x, mid.y);
  await page.mouse.down();
  await page.mouse.move(mid.x, mid.y - 120, { steps: 8 });
  await page.mouse.up();
  const zoomed = await page.evaluate(() => window.senViewer.panes()[0].zoom);
  ctx.assert(Math.abs(zoomed - 1) > 0.1, `zoom changed by dragging (${zoomed})`);
  ctx.assert((await overlay(page, 'zoom')) === `Zoom: ${zoomed.toFixed(2)}×`, 'overlay shows the zoom');
  await page.locator('button[data-tool="pan"]').click();
  const before = await imagePoint(page, 128, 128);
  await page.mouse.move(mid.x, mid.y);
  await page.mouse.down();
  await page.mouse.move(mid.x + 60, mid.y, { steps: 8 });
  await page.mouse.up();
  const after = await imagePoint(page, 128, 128);
  ctx.assertClose(after.x - before.x, 60, 3, 'pan moved the image with the mouse (px)');
  await ctx.screenshot(page, 'wl-zoom-pan');
  await page.locator('button[data-action="reset"]').click();
  await page.waitForFunction(() => Math.abs(window.senViewer.panes()[0].zoom - 1) < 0.01);

  // Tag browser: the current image's Slice Location is 55.
  await page.locator('button[data-action="tags"]').click();
  await page.locator('.rd-tags input').fill('slice location');
  const row = page.locator('.rd-tags tr[data-tag="00201041"]');
  ctx.assert((await row.locator('td').nth(3).innerText()) === '55', 'tag browser shows Slice Location 55');
  await ctx.screenshot(page, 'tags');
  await page.locator('.rd-tags header button').click();
  await page.locator('.rd-tags').waitFor({ state: 'detached' });

  // Back to the study list.
  await page.locator('button[data-action="back"]').click();
  await page.waitForFunction(() => location.pathname === '/' && !window.senViewer);
  ctx.assert((await page.locator('.rd').count()) === 0, 'reading view gone after going back');

  // An unknown study: a message, not a blank screen.
  await page.goto(`${ctx.baseUrl}/viewer?StudyInstanceUIDs=1.2.3.4.5`);
  await page.locator('.rd-status').filter({ hasText: 'Could not open the study' }).waitFor();
  await ctx.screenshot(page, 'unknown-study');

  // A chest radiograph without Image Orientation (Patient): the markers come
  // from Patient Orientation L\F (rows to the left, columns to the feet).
  const cr = await findStudy(ctx.baseUrl, { modality: 'CR', description: 'Chest PA' });
  await openStudy(page, ctx.baseUrl, [cr]);
  await expectOrientation(page, ctx, { left: 'R', right: 'L', top: 'H', bottom: 'F' }, 'CR from Patient Orientation');
  await ctx.screenshot(page, 'cr-orientation');
  // Ultrasound has neither: no markers.
  const us = await findStudy(ctx.baseUrl, { modality: 'US', description: 'Siêu âm tim – cine' });
  await openStudy(page, ctx.baseUrl, [us]);
  await waitOverlay(page, 'index', 'Frame: 1/' + (await page.evaluate(() => window.senViewer.panes()[0].count)));
  await expectOrientation(page, ctx, { left: '', right: '', top: '', bottom: '' }, 'US (no orientation)');
}
