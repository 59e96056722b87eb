// Priors and layouts: the patient's other studies are listed, a prior opens
// beside the current study and scrolls with it by slice position; layouts
// 1×2 and 2×2; a series dragged from the rail into a viewport.
// Current CT: slice k at z = 5k mm (k = 0..23); prior CT: z = 40 + 5k (k = 0..7).
import { findStudy, openStudy, overlay, waitOverlay } from './reader.spec.mjs';

export default async function (ctx) {
  const current = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT Đầu – phantom' });
  const prior = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT Đầu – phantom (trước)' });
  const page = await ctx.newPage({ viewport: { width: 1440, height: 900 }, locale: 'en-US' });
  await openStudy(page, ctx.baseUrl, [current]);

  // The other studies of the patient: exactly the prior.
  const others = page.locator('.rd-other');
  await others.first().waitFor();
  ctx.assert((await others.count()) === 1, 'one other study listed');
  ctx.assert((await others.first().getAttribute('data-study-uid')) === prior, 'the listed study is the prior');
  ctx.assert((await others.first().innerText()).includes('2025'), 'prior date shown');

  // Scroll the current study to z = 55 mm, then open the prior beside it.
  await page.locator('.rd-slider').fill('11');
  await waitOverlay(page, 'position', 'Loc: 55.0 mm');
  await others.first().locator('button.rd-compare').click();
  await page.waitForFunction(() => window.senViewer.panes().length === 2 && window.senViewer.panes()[1].count === 8);
  await waitOverlay(page, 'study', 'CT Đầu – phantom (trước)', 1);
  await waitOverlay(page, 'position', 'Loc: 55.0 mm', 1);
  await waitOverlay(page, 'index', 'Im: 4/8', 1);
  await ctx.screenshot(page, 'prior-beside');

  // Synchronised scrolling by position: current z = 65 → prior z = 65; current z = 115 → prior's last (75).
  await page.locator('.rd-vp').first().hover();
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  await waitOverlay(page, 'position', 'Loc: 65.0 mm');
  await waitOverlay(page, 'position', 'Loc: 65.0 mm', 1);
  await page.keyboard.press('End');
  await waitOverlay(page, 'position', 'Loc: 115.0 mm');
  await waitOverlay(page, 'position', 'Loc: 75.0 mm', 1);
  await ctx.screenshot(page, 'synced-end');

  // Sync off: the prior stays where it is.
  await page.locator('button[data-action="sync"]').click();
  await page.keyboard.press('Home');
  await waitOverlay(page, 'position', 'Loc: 0.0 mm');
  await page.waitForTimeout(300);
  ctx.assert((await overlay(page, 'position', 1)) === 'Loc: 75.0 mm', 'prior not scrolled with sync off');
  await page.locator('button[data-action="sync"]').click();

  // 2×2 layout; drag the prior's series from the rail into the fourth viewport.
  await page.locator('button[data-action="layout4"]').click();
  await page.locator('.rd-menu-item[data-key="4"]').click();
  await page.waitForFunction(() => document.querySelectorAll('.rd-pane').length === 4);
  const priorThumb = page.locator('.rd-thumb').nth(1);
  await priorThumb.dragTo(page.locator('.rd-pane').nth(3));
  await page.waitForFunction((uid) => window.senViewer.panes()[3]?.studyUid === uid && window.senViewer.panes()[3].count === 8, prior);
  await waitOverlay(page, 'study', 'CT Đầu – phantom (trước)', 3);
  await ctx.screenshot(page, 'layout-2x2-dropped');

  // Back to 1×1: one viewport, still the current study.
  await page.locator('button[data-action="layout4"]').click();
  await page.locator('.rd-menu-item[data-key="1"]').click();
  await page.waitForFunction(() => document.querySelectorAll('.rd-pane').length === 1);
  await waitOverlay(page, 'study', 'CT Đầu – phantom');

  // The EMR form with a repeated StudyInstanceUIDs opens the prior beside the current study directly.
  const page2 = await ctx.newPage({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  await openStudy(page2, ctx.baseUrl, [current, prior]);
  await page2.waitForFunction((uid) => window.senViewer.panes()[1]?.studyUid === uid && window.senViewer.panes()[1].count === 8, prior);
  await waitOverlay(page2, 'index', 'Im: 1/8', 1);
  await ctx.screenshot(page2, 'url-with-prior');

  // The other study's own link opens it alone in the reader (a fresh view).
  await page.locator('.rd-other-link').first().click();
  await page.waitForFunction((uid) => location.search.includes(uid) && window.senViewer?.panes()[0]?.count === 8, prior);
  await waitOverlay(page, 'study', 'CT Đầu – phantom (trước)');
  ctx.assert((await page.locator('.rd-pane').count()) === 1, 'one viewport in the new view');
  ctx.assert((await page.locator('.rd').count()) === 1, 'the previous view is gone');
  await ctx.screenshot(page, 'prior-alone');
}
