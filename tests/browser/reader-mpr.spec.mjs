// MPR on generated CTs of known geometry (`gen-sample-data mpr-ct`, imported
// by tests/viewer.rs): 128×128 axial slices of 1 mm pixels every 2 mm from
// z = -50 to 68, a body cylinder of 40 HU, and a 6 mm cube of 2000 HU (the
// fiducial) centred at patient (20, -24, 10) mm.
// - The fiducial, clicked in the axial plane, is where the sagittal and
//   coronal viewports draw that patient point (canvas pixels read at the
//   viewport's own world-to-canvas position), and the planes are oriented as
//   a radiologist expects (head up, patient's left on the right).
// - A slab with MIP shows the fiducial from an axial slice 14 mm away; the
//   plain slice there does not.
// - The gantry-tilted and the irregular series are refused, with the reason.
import { findStudy, openStudy } from './reader.spec.mjs';

const FIDUCIAL = [20, -24, 10];
const add = (p, d) => p.map((v, k) => v + d[k]);

async function settle(page) {
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 150)))));
}

/** Grey level (red channel) drawn at a patient point in one plane. */
async function grey(page, plane, world) {
  const px = await page.evaluate(([p, w]) => window.senMpr.pixelAt(p, w), [plane, world]);
  if (!px) throw new Error(`no pixel for ${plane}`);
  return px[0];
}

async function waitBright(page, plane, world, what) {
  try {
    await page.waitForFunction(([p, w]) => (window.senMpr.pixelAt(p, w)?.[0] ?? 0) >= 240, [plane, world], { timeout: 20000 });
  } catch {
    throw new Error(`${what}: ${plane} is ${await grey(page, plane, world)} at ${world}, expected the bright fiducial`);
  }
}

async function openMpr(ctx, description) {
  const uid = await findStudy(ctx.baseUrl, { modality: 'CT', description });
  const page = await ctx.newPage({ viewport: { width: 1500, height: 800 }, locale: 'en-US' });
  await openStudy(page, ctx.baseUrl, [uid]);
  await page.locator('button[data-action="mpr"]').click();
  await page.waitForFunction(() => ['ready', 'refused', 'error'].includes(window.senMpr?.state().state), null, { timeout: 60000 });
  return page;
}

export default async function (ctx) {
  const page = await openMpr(ctx, 'MPR phantom - regular');
  const st = await page.evaluate(() => window.senMpr.state());
  ctx.assert(st.state === 'ready', `regular CT forms a volume (${JSON.stringify(st)})`);
  ctx.assertClose(st.spacing, 2, 1e-6, 'slice spacing');
  ctx.assert((await page.locator('.mpr-vp canvas').count()) >= 3, 'three viewports drawn');
  ctx.assert(await page.locator('.rd-grid').isHidden(), 'the stack viewports make way for MPR');

  // Bring the axial plane to the fiducial's level, then click the fiducial in it.
  await page.evaluate((z) => window.senMpr.setCenter([0, 0, z]), FIDUCIAL[2]);
  await waitBright(page, 'axial', FIDUCIAL, 'axial at the fiducial level');
  const [x, y] = await page.evaluate((w) => window.senMpr.worldToClient('axial', w), FIDUCIAL);
  await page.mouse.click(x, y);
  await page.waitForFunction(
    (f) => {
      const c = window.senMpr.state().center;
      return c && f.every((v, k) => Math.abs(c[k] - v) < 1);
    },
    FIDUCIAL,
    { timeout: 10000 },
  ).catch(async () => {
    throw new Error(`crosshair centre ${JSON.stringify(await page.evaluate(() => window.senMpr.state().center))}, expected ${FIDUCIAL}`);
  });
  await settle(page);
  await ctx.screenshot(page, 'mpr-fiducial');
  // The same patient point is bright in the other two planes …
  await waitBright(page, 'sagittal', FIDUCIAL, 'sagittal');
  await waitBright(page, 'coronal', FIDUCIAL, 'coronal');
  // … and 10 mm beside it (outside the 6 mm cube, inside the body) it is not.
  for (const [plane, d] of [['sagittal', [0, 10, 0]], ['sagittal', [0, 0, 10]], ['coronal', [10, 0, 0]], ['coronal', [0, 0, -10]], ['axial', [-10, 0, 0]]]) {
    const g = await grey(page, plane, add(FIDUCIAL, d));
    ctx.assert(g > 60 && g < 200, `${plane} 10 mm beside the fiducial (${d}) shows the body, not the fiducial (grey ${g})`);
  }
  // Orientation: head up in sagittal and coronal, patient's left on the viewer's right in axial and coronal,
  // anterior on the left in sagittal.
  const client = (plane, w) => page.evaluate(([p, w]) => window.senMpr.worldToClient(p, w), [plane, w]);
  const [co0, coUp] = [await client('coronal', FIDUCIAL), await client('coronal', add(FIDUCIAL, [0, 0, 20]))];
  ctx.assert(coUp[1] < co0[1] - 10, `coronal: superior is up (${co0} → ${coUp})`);
  const [sa0, saUp] = [await client('sagittal', FIDUCIAL), await client('sagittal', add(FIDUCIAL, [0, 0, 20]))];
  ctx.assert(saUp[1] < sa0[1] - 10, `sagittal: superior is up (${sa0} → ${saUp})`);
  const saAnt = await client('sagittal', add(FIDUCIAL, [0, -20, 0]));
  ctx.assert(saAnt[0] < sa0[0] - 10, `sagittal: anterior is left (${sa0} → ${saAnt})`);
  const [ax0, axLeft] = [await client('axial', FIDUCIAL), await client('axial', add(FIDUCIAL, [20, 0, 0]))];
  ctx.assert(axLeft[0] > ax0[0] + 10, `axial: patient left is on the right (${ax0} → ${axLeft})`);
  const coLeft = await client('coronal', add(FIDUCIAL, [20, 0, 0]));
  ctx.assert(coLeft[0] > co0[0] + 10, `coronal: patient left is on the right (${co0} → ${coLeft})`);

  // MIP: an axial plane 14 mm above the fiducial (its top is at 13 mm + 1 mm of the neighbouring slice).
  const above = add(FIDUCIAL, [0, 0, 14]);
  await page.evaluate((w) => window.senMpr.setCenter(w), above);
  await settle(page);
  const plain = await grey(page, 'axial', above);
  ctx.assert(plain < 200, `the plain axial slice 14 mm above does not show the fiducial (grey ${plain})`);
  await page.locator('.mpr-slab').fill('40');
  await page.locator('.mpr-slab').dispatchEvent('change');
  await page.locator('button[data-action="mip"]').click();
  await page.waitForFunction(() => window.senMpr.state().mip && window.senMpr.state().slab === 40);
  await waitBright(page, 'axial', above, 'axial MIP over a 40 mm slab');
  const st2 = await page.evaluate(() => window.senMpr.state());
  ctx.assertClose(st2.planes.axial.slab, 40, 1e-6, 'axial slab thickness');
  await ctx.screenshot(page, 'mpr-mip');
  // A slab that does not reach the fiducial (10 mm: 9 to 19 mm above the centre... 19 ± 5) stays dark.
  await page.evaluate((w) => window.senMpr.setCenter(w), add(FIDUCIAL, [0, 0, 24]));
  await page.locator('.mpr-slab').fill('10');
  await page.locator('.mpr-slab').dispatchEvent('change');
  await settle(page);
  const off = await grey(page, 'axial', add(FIDUCIAL, [0, 0, 24]));
  ctx.assert(off < 200, `MIP over a slab that misses the fiducial does not show it (grey ${off})`);

  // Closing gives the stack viewports back.
  await page.locator('button[data-action="mpr-close"]').click();
  await page.waitForFunction(() => !document.querySelector('.mpr') && window.senMpr === undefined);
  ctx.assert(await page.locator('.rd-grid').isVisible(), 'stack viewports back');

  // Series that do not form a volume: refused with the reason, nothing drawn.
  for (const [description, reason, words] of [
    ['MPR phantom - gantry tilt', 'tilt', ['15°', 'gantry tilt']],
    ['MPR phantom - irregular spacing', 'irregularSpacing', ['irregular', '2 to 6 mm']],
  ]) {
    const p = await openMpr(ctx, description);
    const s = await p.evaluate(() => window.senMpr.state());
    ctx.assert(s.state === 'refused' && s.reason === reason, `${description}: refused for ${reason} (${JSON.stringify(s)})`);
    const text = await p.locator('.mpr-refused').innerText();
    for (const w of words) ctx.assert(text.includes(w), `${description}: the reason says "${w}" (${text})`);
    ctx.assert((await p.locator('.mpr canvas').count()) === 0, `${description}: no volume drawn`);
    ctx.log(`${description}: ${text.replace(/\n/g, ' ')}`);
    await ctx.screenshot(p, `mpr-refused-${reason}`);
    await p.context().close();
  }
}
