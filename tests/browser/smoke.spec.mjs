// The viewer loads: the app's root element is present and no page errors.
export default async function (ctx) {
  const page = await ctx.newPage();
  await page.goto(`${ctx.baseUrl}/`);
  await page.waitForSelector('#app');
  await ctx.screenshot(page, 'home');
}
