// The study list and the launch links, in a real browser against the real
// server with the demo studies (and, in CI, a 400-slice CT).
//
// Covers: the default language follows the browser; a Vietnamese name typed
// without diacritics finds the patient with one QIDO request; the language
// switch (texts and date format); client-side column sort; paging through
// every study with limit/offset gives the archive's newest-first order; a
// click opens the CT phantom in the viewer and Back returns to the search;
// IHE IID links (STUDY, PATIENT, unknown) land in the viewer or say why;
// the list on a 390x844 touch phone is a column of cards that open on tap.

async function qido(ctx, page, query) {
  const r = await page.request.get(`${ctx.baseUrl}/dicom-web/studies?${query}`, {
    headers: { Accept: 'application/dicom+json' },
  });
  ctx.assert(r.ok(), `QIDO ${query}: ${r.status()}`);
  const rows = r.status() === 204 ? [] : await r.json();
  return { rows, total: Number(r.headers()['x-total-count'] ?? rows.length) };
}

const uidOf = (ds) => ds['0020000D'].Value[0];

async function rowsShown(page) {
  return page.$$eval('.sl-table tbody tr', (trs) =>
    trs.map((tr) => ({
      uid: tr.dataset.uid,
      name: tr.querySelector('.c-name')?.textContent ?? '',
      date: tr.querySelector('.c-date')?.textContent ?? '',
      desc: tr.querySelector('.c-desc')?.textContent ?? '',
      inst: tr.querySelector('.c-inst')?.textContent ?? '',
    })),
  );
}

/** Waits until the reading view has put its first image on screen (its
 * `sen:first-image` performance mark). */
async function viewerShowsImage(page) {
  await page.waitForFunction(() => performance.getEntriesByName('sen:first-image').length > 0, null, { timeout: 60_000 });
}

/** Waits until the list has finished the search it is running. */
async function settled(page) {
  await page.waitForFunction(() => document.querySelector('.sl-status')?.dataset.state === 'done');
}

export default async function (ctx) {
  const page = await ctx.newPage({ viewport: { width: 1400, height: 900 }, locale: 'vi-VN' });
  const all = await qido(ctx, page, 'limit=1000');
  ctx.assert(all.total >= 5, `the demo studies are archived (${all.total})`);
  const [ct] = (await qido(ctx, page, 'AccessionNumber=ACC-CT-0001')).rows;
  const [prior] = (await qido(ctx, page, 'AccessionNumber=ACC-CT-0000')).rows;
  ctx.assert(ct && prior, 'the CT phantom and its prior are archived');
  const ctUid = uidOf(ct);
  const priorUid = uidOf(prior);

  // 1. The list in the browser's language, newest first.
  await page.goto(`${ctx.baseUrl}/`);
  await page.waitForSelector('.sl-table tbody tr');
  await settled(page);
  ctx.assert((await page.textContent('.sl-title')) === 'Danh sách ca chụp', 'Vietnamese by default for a vi-VN browser');
  let shown = await rowsShown(page);
  ctx.assert(shown.length === Math.min(all.total, 25), `first page shows ${shown.length} of ${all.total}`);
  ctx.assert(
    shown.map((r) => r.uid).join() === all.rows.slice(0, shown.length).map(uidOf).join(),
    'the list is in the archive order (newest first)',
  );
  await ctx.screenshot(page, 'list-vi');

  const bigCt = process.env.PACS_TEST_BIGCT_STUDY;
  if (bigCt) {
    const row = shown.find((r) => r.uid === bigCt);
    ctx.assert(row && row.inst.startsWith('400'), `the 400-slice CT is listed with 400 images: ${JSON.stringify(row)}`);
  }

  // 2. A Vietnamese name typed without diacritics: one request, the right patient.
  const before = await page.evaluate(() => window.senList.searches);
  await page.fill('#sl-name', 'nguyen van an');
  await page.waitForFunction((n) => window.senList.searches > n, before);
  await settled(page);
  const searches = (await page.evaluate(() => window.senList.searches)) - before;
  ctx.assert(searches === 1, `one QIDO request per search, got ${searches}`);
  shown = await rowsShown(page);
  ctx.assert(shown.length === 2, `two studies of Nguyễn Văn An: ${JSON.stringify(shown)}`);
  ctx.assert(shown.every((r) => r.name === 'Nguyễn Văn An'), `names: ${shown.map((r) => r.name)}`);
  ctx.assert(shown[0].uid === ctUid && shown[1].uid === priorUid, 'newest first');
  ctx.assert(shown[0].date === '15/03/2026', `Vietnamese date format: ${shown[0].date}`);
  const query = await page.evaluate(() => window.senList.lastQuery);
  ctx.assert(query.includes('fuzzymatching=true'), `fuzzy name search: ${query}`);
  ctx.assert(new URL(page.url()).searchParams.get('name') === 'nguyen van an', 'the search is kept in the URL');
  await ctx.screenshot(page, 'search-without-diacritics');

  // 3. Language switch: texts and dates.
  await page.click('[data-lang=en]');
  ctx.assert((await page.textContent('.sl-title')) === 'Studies', 'English title');
  ctx.assert((await page.textContent('th.c-date')).trim() === 'Study date', 'English column');
  shown = await rowsShown(page);
  ctx.assert(shown[0].date === '15 Mar 2026', `English date format: ${shown[0].date}`);
  ctx.assert((await page.inputValue('#sl-name')) === 'nguyen van an', 'the search survives the language switch');
  await ctx.screenshot(page, 'list-en');

  // 4. Sort this page by date, oldest first, then back.
  await page.click('th.c-date .sl-sort');
  shown = await rowsShown(page);
  ctx.assert(shown[0].uid === priorUid, 'ascending date puts the prior first');
  ctx.assert((await page.getAttribute('th.c-date', 'aria-sort')) === 'ascending', 'aria-sort');
  await page.click('th.c-date .sl-sort');
  shown = await rowsShown(page);
  ctx.assert(shown[0].uid === ctUid, 'descending date puts the newest first');

  // 5. Modality filter.
  await page.fill('#sl-name', '');
  await page.selectOption('#sl-modality', 'MR');
  await page.waitForFunction(() => window.senList.lastQuery.includes('ModalitiesInStudy=MR'));
  await settled(page);
  shown = await rowsShown(page);
  const mr = await qido(ctx, page, 'ModalitiesInStudy=MR');
  ctx.assert(shown.length === mr.total && shown.length > 0, `MR studies: ${shown.length} of ${mr.total}`);
  await ctx.screenshot(page, 'modality-mr');

  // 6. Paging, two per page, through every study.
  await page.goto(`${ctx.baseUrl}/?size=2`);
  await page.waitForSelector('.sl-table tbody tr');
  await settled(page);
  const seen = [];
  for (let i = 0; i < 1000; i++) {
    shown = await rowsShown(page);
    ctx.assert(shown.length >= 1 && shown.length <= 2, `page ${i + 1} has ${shown.length} rows`);
    seen.push(...shown.map((r) => r.uid));
    if (i === 1) await ctx.screenshot(page, 'paging-page-2');
    if (await page.isDisabled('.sl-next')) break;
    const q = await page.evaluate(() => window.senList.lastQuery);
    await page.click('.sl-next');
    await page.waitForFunction((prev) => window.senList.lastQuery !== prev, q);
    await settled(page);
  }
  ctx.assert(seen.join() === all.rows.map(uidOf).join(), `paging visits every study once, newest first (${seen.length})`);
  const range = await page.textContent('.sl-range');
  ctx.assert(range.endsWith(`of ${all.total}`), `range: ${range}`);

  // 7. Open the CT phantom from the list; Back returns to the search.
  await page.goto(`${ctx.baseUrl}/?name=nguyen`);
  await page.waitForSelector(`.sl-table tbody tr[data-uid="${ctUid}"]`);
  await page.click(`.sl-table tbody tr[data-uid="${ctUid}"] .c-desc`);
  await page.waitForURL((u) => u.pathname === '/viewer');
  const opened = new URL(page.url());
  ctx.assert(opened.searchParams.getAll('StudyInstanceUIDs').join() === ctUid, `viewer URL: ${page.url()}`);
  await viewerShowsImage(page);
  await ctx.screenshot(page, 'opened-ct-phantom');
  await page.goBack();
  await page.waitForSelector('.sl-table tbody tr');
  ctx.assert((await page.inputValue('#sl-name')) === 'nguyen', 'Back restores the search');

  // 8. IHE Invoke Image Display.
  let r = await page.goto(`${ctx.baseUrl}/IHEInvokeImageDisplay?requestType=STUDY&studyUID=${ctUid}`);
  ctx.assert(r.ok(), `IID STUDY: ${r.status()}`);
  let u = new URL(page.url());
  ctx.assert(u.pathname === '/viewer' && u.searchParams.getAll('StudyInstanceUIDs').join() === ctUid, `IID STUDY lands on ${page.url()}`);
  await viewerShowsImage(page);
  await ctx.screenshot(page, 'iid-study');
  r = await page.goto(`${ctx.baseUrl}/IHEInvokeImageDisplay?requestType=PATIENT&patientID=VN-0001`);
  u = new URL(page.url());
  ctx.assert(
    u.pathname === '/viewer' && u.searchParams.getAll('StudyInstanceUIDs').join() === `${ctUid},${priorUid}`,
    `IID PATIENT opens the patient's studies newest first: ${page.url()}`,
  );
  await viewerShowsImage(page);
  await ctx.screenshot(page, 'iid-patient');
  // A 404 document is logged by the browser as a console error, so this one
  // goes to a page outside the runner's error collection.
  const refusal = await ctx.browser.newPage();
  r = await refusal.goto(`${ctx.baseUrl}/IHEInvokeImageDisplay?requestType=PATIENT&patientID=NOBODY-9`);
  ctx.assert(r.status() === 404, `unknown patient: ${r.status()}`);
  ctx.assert((await refusal.textContent('#message')).includes('NOBODY-9'), 'the page names the patient ID');
  await ctx.screenshot(refusal, 'iid-unknown-patient');
  r = await refusal.goto(`${ctx.baseUrl}/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.x`);
  ctx.assert(r.status() === 400, `malformed UID: ${r.status()}`);
  ctx.assert((await refusal.textContent('#message')).includes('not a valid UID'), 'the page says why');
  await refusal.close();

  // 9. A phone: cards, big touch targets, tap to open.
  const phone = await ctx.newPage({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: 'en-US',
  });
  await phone.goto(`${ctx.baseUrl}/`);
  await phone.waitForSelector('.sl-table tbody tr');
  await settled(phone);
  ctx.assert((await phone.textContent('.sl-title')) === 'Studies', 'English by default for an en-US browser');
  const cards = await phone.$$eval('.sl-table tbody tr', (trs) =>
    trs.map((tr) => {
      const b = tr.getBoundingClientRect();
      return { display: getComputedStyle(tr).display, left: b.left, right: b.right, height: b.height };
    }),
  );
  ctx.assert(!(await phone.isVisible('.sl-table thead')), 'no table header on a phone');
  ctx.assert(cards.every((c) => c.display === 'grid' && c.left >= 0 && c.right <= 390 && c.height >= 48), `cards fit the screen: ${JSON.stringify(cards)}`);
  const scrollWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
  ctx.assert(scrollWidth <= 390, `no horizontal scrolling (${scrollWidth})`);
  for (const sel of ['.sl-lang-btn', '#sl-name', '.sl-more', '.sl-next']) {
    const b = await phone.locator(sel).first().boundingBox();
    ctx.assert(b && b.height >= 44, `${sel} is a big touch target (${b?.height})`);
  }
  await ctx.screenshot(phone, 'phone-list');
  ctx.assert(!(await phone.isVisible('#sl-pid')), 'secondary filters are folded on a phone');
  await phone.tap('.sl-more');
  ctx.assert(await phone.isVisible('#sl-pid'), 'the Filters button unfolds them');
  await ctx.screenshot(phone, 'phone-filters');
  await phone.tap('.sl-more');
  await phone.fill('#sl-name', 'tran thi bich');
  await phone.waitForFunction(() => window.senList.lastQuery.includes('PatientName=tran'));
  await settled(phone);
  const mrRows = await rowsShown(phone);
  ctx.assert(mrRows.length === 1 && mrRows[0].name === 'Trần Thị Bích', `phone search: ${JSON.stringify(mrRows)}`);
  await ctx.screenshot(phone, 'phone-search');
  await phone.tap(`.sl-table tbody tr[data-uid="${mrRows[0].uid}"] .c-desc`);
  await phone.waitForURL((x) => x.pathname === '/viewer');
  ctx.assert(new URL(phone.url()).searchParams.get('StudyInstanceUIDs') === mrRows[0].uid, 'tap opens the study');
  await viewerShowsImage(phone);
  await ctx.screenshot(phone, 'phone-opened');
}
