// Signing in through the identity provider in a real browser (run by
// tests/oidc.rs against oidc-provider over HTTPS, tests/oidc/op.mjs).
//
// Covers: the login page offers "Sign in with <provider>" (Vietnamese for a
// vi-VN browser); the provider's login and consent pages lead back to the
// study list with our HttpOnly session cookie; the session has the role of
// the ID token; a study opens in the viewer; the callback URL replayed is
// refused; sign-out closes the archive again; a user whose role claim maps
// to no role of the archive is refused with a page saying so.

/** The provider's development login page, then its consent page; with
 * `consentByRequest`, the consent form is sent by page.request (the
 * browser's cookies) and the redirects are followed up to our callback,
 * whose URL is returned unvisited. */
async function atProvider(ctx, page, login, consentByRequest = false) {
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  // The consent page (first sign-in of this user with this client).
  await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
  if (!consentByRequest) {
    await page.click('button[type=submit]');
    return undefined;
  }
  const action = new URL(await page.getAttribute('form', 'action'), page.url()).href;
  let res = await page.request.post(action, { form: { prompt: 'consent' }, maxRedirects: 0 });
  for (let hop = 0; hop < 5; hop++) {
    const location = res.headers().location;
    ctx.assert(res.status() >= 300 && res.status() < 400 && location, `a redirect (${res.status()})`);
    const next = new URL(location, res.url());
    if (next.pathname === '/login/oidc/callback') return next.href;
    res = await page.request.get(next.href, { maxRedirects: 0 });
  }
  throw new Error('the provider did not send the browser back');
}

async function newPage(ctx) {
  const page = await ctx.newPage({
    viewport: { width: 390, height: 844 },
    isMobile: true,
    hasTouch: true,
    locale: 'vi-VN',
    // The provider's certificate is from the test's own CA.
    ignoreHTTPSErrors: true,
  });
  // The provider's development pages import a web font; there is no
  // internet here.
  await page.context().route(/fonts\.googleapis\.com/, (r) => r.fulfill({ status: 200, contentType: 'text/css', body: '' }));
  return page;
}

export default async function (ctx) {
  const user = process.env.PACS_OIDC_USER;
  const norole = process.env.PACS_OIDC_NOROLE;
  const provider = process.env.PACS_OIDC_PROVIDER_NAME;
  ctx.assert(user && norole && provider, 'PACS_OIDC_USER, PACS_OIDC_NOROLE and PACS_OIDC_PROVIDER_NAME are set');

  // 1. Anonymous: the login page offers the provider.
  const page = await newPage(ctx);
  const callbacks = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/login/oidc/callback') callbacks.push(r.url());
  });
  await page.goto(`${ctx.baseUrl}/`);
  await page.waitForURL((u) => u.pathname === '/login');
  const button = page.locator('#oidc-signin');
  const label = await button.textContent();
  ctx.assert(label.includes('Đăng nhập bằng') && label.includes(provider), `the provider's button (${label})`);
  const b = await button.boundingBox();
  ctx.assert(b && b.height >= 44 && b.x + b.width <= 390, `a big touch target (${JSON.stringify(b)})`);
  await ctx.screenshot(page, 'login-with-provider');

  // 2. Through the provider and back: the study list, signed in.
  await button.click();
  await atProvider(ctx, page, user);
  await page.waitForURL((u) => u.origin === ctx.baseUrl && u.pathname === '/');
  await page.waitForSelector('.sl-table tbody tr');
  await page.waitForFunction(() => document.querySelector('.sl-status')?.dataset.state === 'done');
  ctx.assert(callbacks.length === 1, `one callback (${callbacks.length})`);
  const cookies = await page.context().cookies(ctx.baseUrl);
  const session = cookies.find((c) => c.name === 'senpacs_session');
  ctx.assert(session && session.httpOnly && session.sameSite === 'Lax', `an HttpOnly session cookie (${JSON.stringify(cookies.map((c) => c.name))})`);
  ctx.assert(!cookies.some((c) => c.name === 'senpacs_oidc'), 'the sign-in cookie is gone');
  const who = await (await page.request.get(`${ctx.baseUrl}/api/v1/session`)).json();
  ctx.assert(who.name === user && who.role === 'radiologist' && who.session === true, `signed in as ${JSON.stringify(who)}`);
  await ctx.screenshot(page, 'list-after-provider');

  // 3. A study opens in the viewer.
  await Promise.all([page.waitForURL((u) => u.pathname === '/viewer'), page.click('.sl-table tbody tr .c-desc')]);
  await page.waitForFunction(() => performance.getEntriesByName('sen:first-image').length > 0, null, { timeout: 60_000 });
  await ctx.screenshot(page, 'viewer-after-provider');

  // 4. The callback replayed (same state and code) is refused.
  const replay = await page.request.get(callbacks[0], { maxRedirects: 0 });
  ctx.assert(replay.status() === 400, `a replayed callback is refused (${replay.status()})`);

  // 5. Sign out: back to the login page; the archive is closed again.
  await page.goto(`${ctx.baseUrl}/`);
  await page.waitForSelector('.sl-signout button');
  await Promise.all([page.waitForURL((u) => u.pathname === '/login'), page.click('.sl-signout button')]);
  const qido = await page.request.get(`${ctx.baseUrl}/dicom-web/studies`, { headers: { Accept: 'application/dicom+json' } });
  ctx.assert(qido.status() === 401, `signed out, QIDO is refused (${qido.status()})`);

  // 6. A user without a role of the archive: the provider signs them in,
  // the archive refuses them. (The last hops are made by page.request with
  // the browser's cookies, so that the 403 is read rather than logged as a
  // failed page load.)
  const other = await newPage(ctx);
  await other.goto(`${ctx.baseUrl}/login?next=/`);
  await other.click('#oidc-signin');
  const callback = await atProvider(ctx, other, norole, true);
  const refused = await other.request.get(callback, { maxRedirects: 0, headers: { 'Accept-Language': 'vi-VN' } });
  ctx.assert(refused.status() === 403, `no role: refused (${refused.status()})`);
  ctx.assert((await refused.text()).includes('chưa được cấp quyền'), 'says the account has no role');
  const closed = await other.request.get(`${ctx.baseUrl}/dicom-web/studies`);
  ctx.assert(closed.status() === 401, `not signed in (${closed.status()})`);
}
