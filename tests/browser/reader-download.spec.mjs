// The reading view's "Download (ZIP)" link: a plain link to the study's
// DICOMweb URL with accept=application/zip, which the browser saves as a
// ZIP of the study's DICOM files plus a DICOMDIR.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findStudy, openStudy } from './reader.spec.mjs';

export default async function (ctx) {
  const uid = await findStudy(ctx.baseUrl, { modality: 'CT', description: 'CT Đầu – phantom' });
  const page = await ctx.newPage({ locale: 'en-US', acceptDownloads: true });
  await openStudy(page, ctx.baseUrl, [uid]);

  const link = page.locator('a[data-action="download"]');
  ctx.assert(await link.isVisible(), 'the download link is shown once the study is open');
  ctx.assert((await link.innerText()).trim() === 'Download (ZIP)', `label: ${await link.innerText()}`);
  const href = await link.getAttribute('href');
  ctx.assert(href === `/dicom-web/studies/${uid}?accept=application%2Fzip`, `href: ${href}`);
  ctx.assert((await link.getAttribute('download')) === `${uid}.zip`, 'a download link');

  const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
  ctx.assert(download.suggestedFilename() === `${uid}.zip`, `file name: ${download.suggestedFilename()}`);
  const path = join(ctx.outDir, 'study.zip');
  await download.saveAs(path);
  const zip = readFileSync(path);
  ctx.assert(zip.readUInt32LE(0) === 0x04034b50, 'a ZIP (local file header first)');
  ctx.assert(zip.toString('latin1', 30, 38) === 'DICOMDIR', 'the DICOMDIR comes first');
  // End of central directory (no comment): 24 instances plus the DICOMDIR.
  const end = zip.length - 22;
  ctx.assert(zip.readUInt32LE(end) === 0x06054b50, 'end of central directory record');
  ctx.assert(zip.readUInt16LE(end + 10) === 25, `entries: ${zip.readUInt16LE(end + 10)}`);
  ctx.report('zipBytes', zip.length);

  // Vietnamese label after switching the language.
  await page.locator('button[data-action="lang"]').click();
  await page.waitForFunction(() => document.querySelector('a[data-action="download"]')?.textContent === 'Tải về (ZIP)');
  ctx.assert((await link.getAttribute('title')) === 'Tải về (ZIP)', 'Vietnamese title');
  await ctx.screenshot(page, 'download-link');
}
