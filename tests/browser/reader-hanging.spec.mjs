// Hanging protocols (the built-in ones, served by /api/v1/hanging-protocols)
// on studies from `gen-sample-data hanging` (imported by tests/viewer.rs):
// - CT chest: soft tissue left, lung right (in their windows), and below
//   them the most recent *relevant* prior (the CT chest of 2025-04, not the
//   newer CT head), although the series are numbered lung first;
// - MR brain: T1, T2, FLAIR, DWI, whatever the series order;
// - a launch that names a prior is shown as asked, without a protocol;
// - hanging_protocols.json written into the server's config folder
//   (PACS_TEST_CONFIG_DIR) changes the layout of the next study opened:
//   the current soft tissue beside the prior's mediastinum; removed again,
//   the built-in protocol is back.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findStudy, openStudy } from './reader.spec.mjs';

/** The edited protocols the spec writes into the config folder. */
const EDITED = {
  version: 1,
  protocols: [
    {
      id: 'ct-chest-side-by-side',
      name: 'CT chest: current soft tissue left, the prior right',
      modality: 'CT',
      bodyParts: ['CHEST'],
      viewports: [
        { study: 'current', orientation: 'axial', description: 'soft', window: 'mediastinum' },
        { study: 'prior', orientation: 'axial', description: 'mediast', window: 'mediastinum' },
      ],
    },
  ],
};

async function seriesByDescription(baseUrl, study) {
  const r = await fetch(`${baseUrl}/dicom-web/studies/${study}/series`, { headers: { Accept: 'application/dicom+json' } });
  const rows = await r.json();
  return Object.fromEntries(rows.map((s) => [s['0008103E'].Value[0], s['0020000E'].Value[0]]));
}

async function hung(page, protocol, n) {
  await page.waitForFunction(() => document.querySelector('.rd')?.dataset.hanging !== undefined, null, { timeout: 30000 });
  const outcome = await page.evaluate(() => [document.querySelector('.rd').dataset.hanging, document.querySelector('.rd').dataset.protocol]);
  if (outcome[0] !== 'applied' || outcome[1] !== protocol) {
    throw new Error(`hanging: ${outcome[0]} (${outcome[1]}), expected ${protocol} applied`);
  }
  await page.waitForFunction(
    ([p, n]) => document.querySelector('.rd')?.dataset.protocol === p &&
      window.senViewer.panes().length === n && window.senViewer.panes().every((x) => x.count > 0 && x.ww !== undefined),
    [protocol, n],
    { timeout: 30000 },
  );
}

export default async function (ctx) {
  const chest = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT chest' });
  const prior = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT chest (prior)' });
  const cur = await seriesByDescription(ctx.baseUrl, chest);
  const pri = await seriesByDescription(ctx.baseUrl, prior);

  const page = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await openStudy(page, ctx.baseUrl, [chest]);
  await hung(page, 'ct-chest', 4);
  // The protocol applies the CT window presets: let the last one settle.
  await page.waitForFunction(() => Math.round(window.senViewer.panes()[1].ww) === 1500 && Math.round(window.senViewer.panes()[3].ww) === 1500);
  const panes = await page.evaluate(() => window.senViewer.panes());
  const want = [
    [chest, cur['Soft tissue 2 mm'], 350, 50],
    [chest, cur['Lung 1 mm'], 1500, -600],
    [prior, pri['Mediastinum 5 mm'], 350, 50],
    [prior, pri['Lung 5 mm'], 1500, -600],
  ];
  want.forEach(([study, series, ww, wc], i) => {
    ctx.assert(panes[i].studyUid === study, `viewport ${i + 1}: study ${panes[i].studyUid}, expected ${study}`);
    ctx.assert(panes[i].seriesUid === series, `viewport ${i + 1}: series ${panes[i].seriesUid}, expected ${series}`);
    ctx.assertClose(panes[i].ww, ww, 0.5, `viewport ${i + 1} window width`);
    ctx.assertClose(panes[i].wc, wc, 0.5, `viewport ${i + 1} window centre`);
  });
  ctx.assert(await page.locator('.rd-rail-study').count() === 2, 'the prior is listed in the rail');
  await ctx.screenshot(page, 'ct-chest-protocol');

  // MR brain.
  const brain = await findStudy(ctx.baseUrl, { modality: 'MR', description: 'MR brain' });
  const mr = await seriesByDescription(ctx.baseUrl, brain);
  const page2 = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await openStudy(page2, ctx.baseUrl, [brain]);
  await hung(page2, 'mr-brain', 4);
  const order = (await page2.evaluate(() => window.senViewer.panes())).map((p) => p.seriesUid);
  const expected = ['T1 SE ax', 'T2 TSE ax', 'T2 FLAIR ax', 'DWI b1000'].map((d) => mr[d]);
  ctx.assert(JSON.stringify(order) === JSON.stringify(expected), `MR order ${JSON.stringify(order)}, expected ${JSON.stringify(expected)}`);
  await ctx.screenshot(page2, 'mr-brain-protocol');

  // A launch that names the prior: current beside it as asked, no protocol.
  const page3 = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await openStudy(page3, ctx.baseUrl, [chest, prior]);
  await page3.waitForFunction(() => window.senViewer.panes().length === 2 && window.senViewer.panes()[1].count > 0);
  await page3.waitForFunction(() => document.querySelector('.rd').dataset.hanging !== undefined);
  ctx.assert((await page3.evaluate(() => document.querySelector('.rd').dataset.hanging)) === 'skipped', 'no protocol for an explicit launch');
  ctx.assert((await page3.evaluate(() => document.querySelector('.rd').dataset.protocol)) === undefined, 'no protocol id for an explicit launch');
  ctx.assert((await page3.evaluate(() => window.senViewer.panes().length)) === 2, 'still two viewports');

  // The operator edits the protocols in the config folder: the next study opened follows them.
  const dir = process.env.PACS_TEST_CONFIG_DIR;
  if (!dir) {
    ctx.log('PACS_TEST_CONFIG_DIR is not set: the edited protocol is not tried (tests/viewer.rs sets it)');
    return;
  }
  const file = join(dir, 'hanging_protocols.json');
  writeFileSync(file, JSON.stringify(EDITED, null, 2));
  try {
    const page4 = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
    await openStudy(page4, ctx.baseUrl, [chest]);
    await hung(page4, 'ct-chest-side-by-side', 2);
    await page4.waitForFunction(() => window.senViewer.panes().every((p) => Math.round(p.ww) === 350));
    const side = await page4.evaluate(() => window.senViewer.panes());
    ctx.assert(side[0].studyUid === chest && side[0].seriesUid === cur['Soft tissue 2 mm'], `left: ${JSON.stringify(side[0])}`);
    ctx.assert(side[1].studyUid === prior && side[1].seriesUid === pri['Mediastinum 5 mm'], `right: ${JSON.stringify(side[1])}`);
    // Left of right on the screen.
    const boxes = await page4.locator('.rd-pane').evaluateAll((els) => els.filter((e) => e.isConnected).map((e) => e.getBoundingClientRect().x));
    ctx.assert(boxes.length === 2 && boxes[0] < boxes[1], `pane positions ${JSON.stringify(boxes)}`);
    await ctx.screenshot(page4, 'edited-protocol-side-by-side');
  } finally {
    rmSync(file, { force: true });
  }
  // Without the file: the built-in protocol again.
  const page5 = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await openStudy(page5, ctx.baseUrl, [chest]);
  await hung(page5, 'ct-chest', 4);
}
