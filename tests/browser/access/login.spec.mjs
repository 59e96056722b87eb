// Signing in and out in a real browser on a 390x844 phone, against a
// server with a user (run by tests/access.rs, not by tests/viewer.rs, whose
// server has nobody to sign in).
//
// Covers: an anonymous visit lands on the login page (Vietnamese for a
// vi-VN browser, fits the screen, big touch targets); signing in returns
// to the study list; the session cookie is out of reach of scripts; the
// list's sign-out button ends the session; a session idle past the
// configured time-out sends the browser back to the login page.

async function onLogin(ctx, page) {
  await page.waitForURL((u) => u.pathname === '/login');
  await page.waitForSelector('#username');
}

async function signIn(ctx, page, user, password) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('button[type=submit]')]);
  await page.waitForSelector('.sl-table tbody tr');
  await page.waitForFunction(() => document.querySelector('.sl-status')?.dataset.state === 'done');
}

export default async function (ctx) {
  const user = process.env.PACS_TEST_USER;
  const password = process.env.PACS_TEST_PASSWORD;
  const idle = Number(process.env.PACS_TEST_IDLE_SECONDS);
  ctx.assert(user && password && idle > 0, 'PACS_TEST_USER, PACS_TEST_PASSWORD and PACS_TEST_IDLE_SECONDS are set');
  const page = await ctx.newPage({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    locale: 'vi-VN',
  });

  // 1. Anonymous: the login page, in Vietnamese, fitting the phone.
  await page.goto(`${ctx.baseUrl}/`);
  await onLogin(ctx, page);
  ctx.assert(new URL(page.url()).searchParams.get('next') === '/', `comes back to the list (${page.url()})`);
  ctx.assert((await page.textContent('h1')).includes('Đăng nhập'), 'Vietnamese for a vi-VN browser');
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  ctx.assert(scrollWidth <= 390, `no horizontal scrolling (${scrollWidth})`);
  for (const sel of ['#username', '#password', 'button[type=submit]']) {
    const b = await page.locator(sel).boundingBox();
    ctx.assert(b && b.height >= 44 && b.x >= 0 && b.x + b.width <= 390, `${sel} is a big touch target on screen (${JSON.stringify(b)})`);
  }
  await ctx.screenshot(page, 'login');

  // 2. Signed in: the study list, and a cookie scripts cannot read.
  await signIn(ctx, page, user, password);
  const rows = await page.locator('.sl-table tbody tr').count();
  ctx.assert(rows >= 5, `the demo studies are listed (${rows})`);
  ctx.assert((await page.evaluate(() => document.cookie)) === '', 'the session cookie is HttpOnly');
  await page.waitForSelector('.sl-signout button');
  await ctx.screenshot(page, 'list');

  // 3. Sign out: back to the login page, and the list is closed again.
  await Promise.all([page.waitForURL((u) => u.pathname === '/login'), page.click('.sl-signout button')]);
  await page.goto(`${ctx.baseUrl}/`);
  await onLogin(ctx, page);
  const qido = await page.request.get(`${ctx.baseUrl}/dicom-web/studies`, { headers: { Accept: 'application/dicom+json' } });
  ctx.assert(qido.status() === 401, `signed out, QIDO is refused (${qido.status()})`);

  // 4. Idle past the time-out: the next visit asks to sign in again.
  await signIn(ctx, page, user, password);
  await page.waitForTimeout((idle + 2) * 1000);
  await page.reload();
  await onLogin(ctx, page);
  await ctx.screenshot(page, 'expired');
}
