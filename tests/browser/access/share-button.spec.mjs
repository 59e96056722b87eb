// The reader's Share button, as a radiologist signed in on a desktop uses
// it: a dialog with the validity in days and a PIN option makes a link
// (POST /api/v1/shares with the session cookie), shows its URL, PIN and
// QR code and copies the URL; the link then opens in another browser (a
// patient's phone) with that PIN, where the viewer offers no Share button
// but saves the image on screen as a JPEG (run by tests/shares.rs).

export default async function (ctx) {
  const user = process.env.PACS_TEST_USER;
  const password = process.env.PACS_TEST_PASSWORD;
  const study = process.env.PACS_SHARE_STUDY;
  ctx.assert(user && password && study, 'PACS_TEST_USER, PACS_TEST_PASSWORD and PACS_SHARE_STUDY are set');
  const page = await ctx.newPage({ locale: 'en-US', viewport: { width: 1280, height: 800 } });
  await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: ctx.baseUrl });

  // Sign in, then open the study.
  await page.goto(`${ctx.baseUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(study)}`);
  await page.waitForURL((u) => u.pathname === '/login');
  await page.fill('#username', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/viewer'), page.click('button[type=submit]')]);
  await page.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 30000 });

  // The Share button, and its dialog.
  const share = page.locator('button[data-action="share"]');
  await share.waitFor({ state: 'visible', timeout: 10000 });
  ctx.assert((await share.innerText()).trim() === 'Share', `label: ${await share.innerText()}`);
  await share.click();
  const dialog = page.locator('dialog.sh-dialog');
  await dialog.waitFor({ state: 'visible' });
  ctx.assert(await page.locator('#sh-pin').isChecked(), 'a PIN by default');
  await page.fill('#sh-days', '7');
  await page.click('button[data-action="share-create"]');
  const url = page.locator('#sh-url');
  await url.waitFor({ state: 'visible', timeout: 10000 });
  const link = await url.inputValue();
  ctx.assert(link.startsWith(`${ctx.baseUrl}/s/shr_`), `the link: ${link}`);
  const pin = (await page.locator('.sh-pin-value strong').innerText()).trim();
  ctx.assert(/^\d{6}$/.test(pin), `a 6-digit PIN: ${pin}`);
  const qr = page.locator('img.sh-qr');
  await page.waitForFunction(() => (document.querySelector('img.sh-qr')?.naturalWidth ?? 0) > 0, null, { timeout: 10000 });
  ctx.assert((await qr.getAttribute('src')) === `/s/${link.split('/s/')[1]}/qr.svg`, 'the QR code of the link');
  const expires = await page.locator('.sh-expires').innerText();
  ctx.assert(expires.startsWith('Valid until'), `validity shown: ${expires}`);
  await page.click('button[data-action="share-copy"]');
  await page.waitForFunction(() => document.querySelector('button[data-action="share-copy"]')?.textContent === 'Copied');
  const copied = await page.evaluate(() => navigator.clipboard.readText()).catch(() => null);
  ctx.assert(copied === null || copied === link, `the clipboard holds the link (${copied})`);
  await ctx.screenshot(page, 'share-dialog');

  // Validity: 7 days asked, about 7 days given.
  const shares = await page.request.get(`${ctx.baseUrl}/api/v1/shares`);
  ctx.assert(shares.status() === 200, `the creator's list (${shares.status()})`);
  const row = (await shares.json()).find((s) => s.studies.includes(study));
  ctx.assert(row && row.pin === true, 'listed, with a PIN');
  const days = (row.expires - row.created) / 86400;
  ctx.assert(days === 7, `valid 7 days (${days})`);

  // Vietnamese labels.
  await page.click('button[data-action="share-close"]');
  await page.locator('button[data-action="lang"]').click();
  await page.waitForFunction(() => document.querySelector('button[data-action="share"]')?.textContent === 'Chia sẻ');

  // The link on the patient's phone: PIN, study page, the viewer without
  // a Share button, and the image on screen saved as a JPEG.
  const phone = await ctx.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, locale: 'vi-VN', acceptDownloads: true });
  await phone.goto(link);
  await phone.waitForSelector('#pin');
  await phone.fill('#pin', pin);
  await Promise.all([phone.waitForLoadState('load'), phone.click('button[type=submit]')]);
  await Promise.all([phone.waitForURL((u) => u.pathname === '/viewer'), phone.click('a[href^="/viewer"]')]);
  await phone.waitForFunction(() => window.senViewer?.firstImageMs !== undefined, null, { timeout: 30000 });
  const jpeg = phone.locator('button[data-action="jpeg"]');
  await jpeg.waitFor({ state: 'visible', timeout: 10000 });
  ctx.assert(await phone.locator('button[data-action="share"]').isHidden(), 'no Share button for a share link');
  const [download] = await Promise.all([phone.waitForEvent('download'), jpeg.click()]);
  ctx.assert(download.suggestedFilename().endsWith('.jpg'), `file name: ${download.suggestedFilename()}`);
  const path = await download.path();
  const { readFileSync } = await import('node:fs');
  const bytes = readFileSync(path);
  ctx.assert(bytes[0] === 0xff && bytes[1] === 0xd8, 'a JPEG (SOI marker)');
  ctx.report('jpegBytes', bytes.length);
  await ctx.screenshot(phone, 'share-viewer-jpeg');
}
