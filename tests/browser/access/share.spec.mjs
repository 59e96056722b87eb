// A share link opened on a 390x844 phone, as a patient would: the PIN page
// (Vietnamese for a vi-VN browser, fitting the screen), the study page with
// its ZIP download, the read-only viewer showing the shared study, nothing
// of other studies, and a revoked link that stops working (run by
// tests/shares.rs).

export default async function (ctx) {
  const token = process.env.PACS_SHARE_TOKEN;
  const pin = process.env.PACS_SHARE_PIN;
  const study = process.env.PACS_SHARE_STUDY;
  const other = process.env.PACS_OTHER_STUDY;
  const revoke = process.env.PACS_SHARE_REVOKE_AUTH;
  ctx.assert(token && pin && study && other && revoke, 'PACS_SHARE_* and PACS_OTHER_STUDY are set');
  const page = await ctx.newPage({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: 'vi-VN',
  });

  // 1. The link asks for the PIN, in Vietnamese, on one screen width.
  await page.goto(`${ctx.baseUrl}/s/${token}`);
  await page.waitForSelector('#pin');
  ctx.assert((await page.textContent('h1')).includes('Kết quả'), 'Vietnamese for a vi-VN browser');
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  ctx.assert(scrollWidth <= 390, `no horizontal scrolling (${scrollWidth})`);
  const button = await page.locator('button[type=submit]').boundingBox();
  ctx.assert(button && button.height >= 44, `a big touch target (${JSON.stringify(button)})`);
  await ctx.screenshot(page, 'share-pin');

  // 2. The right PIN opens the study page, with the ZIP download.
  await page.fill('#pin', pin);
  await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
  const zip = page.locator('a[href*="accept=application/zip"]');
  ctx.assert((await zip.count()) === 1, 'one ZIP download link');
  ctx.assert((await zip.getAttribute('href')).includes(study), 'the ZIP is of the shared study');
  ctx.assert((await page.evaluate(() => document.cookie)) === '', 'the share cookie is HttpOnly');
  await ctx.screenshot(page, 'share-study');

  // 3. The viewer shows the shared study.
  await Promise.all([page.waitForURL((u) => u.pathname === '/viewer'), page.click(`a[href^="/viewer"]`)]);
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 30000 });
  await ctx.screenshot(page, 'share-viewer');

  // 4. Nothing else: the search lists the shared study only, another
  // study is refused, and the study list page is closed.
  const list = await page.request.get(`${ctx.baseUrl}/dicom-web/studies`, { headers: { Accept: 'application/dicom+json' } });
  ctx.assert(list.status() === 200, `QIDO answers (${list.status()})`);
  const rows = await list.json();
  ctx.assert(rows.length === 1 && rows[0]['0020000D'].Value[0] === study, `only the shared study (${rows.length})`);
  const refused = await page.request.get(`${ctx.baseUrl}/dicom-web/studies/${other}/metadata`);
  ctx.assert(refused.status() === 403, `another study is refused (${refused.status()})`);
  const home = await page.request.get(`${ctx.baseUrl}/`);
  ctx.assert(home.status() === 403, `the study list is closed (${home.status()})`);

  // 5. Revoked by its creator: the link and the open page stop working.
  const shares = await page.request.get(`${ctx.baseUrl}/api/v1/shares`, { headers: { Authorization: revoke } });
  const id = (await shares.json())[0].id;
  const del = await page.request.delete(`${ctx.baseUrl}/api/v1/shares/${id}`, { headers: { Authorization: revoke } });
  ctx.assert(del.status() === 204, `revoked (${del.status()})`);
  // (Fetched, not navigated to: a 410 page load is logged as a console error.)
  const again = await page.request.get(`${ctx.baseUrl}/s/${token}`, { headers: { 'Accept-Language': 'vi-VN' } });
  ctx.assert(again.status() === 410, `the link is gone (${again.status()})`);
  ctx.assert((await again.text()).includes('không còn hiệu lực'), 'says the link is no longer valid');
  const after = await page.request.get(`${ctx.baseUrl}/dicom-web/studies/${study}/metadata`);
  ctx.assert(after.status() === 410, `the share cookie is refused too (${after.status()})`);
}
