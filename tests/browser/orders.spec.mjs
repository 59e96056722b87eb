// The study list shows each study's exam status from its order (the
// accession number joins them), in the page's language.
//
// Makes an order for the CT phantom's accession number through the REST
// API, completes it, and reads the badge in the list; a study without an
// order shows its accession number alone.

export default async function (ctx) {
  const page = await ctx.newPage({ viewport: { width: 1400, height: 900 }, locale: 'en-US' });
  const created = await page.request.post(`${ctx.baseUrl}/api/v1/orders`, {
    data: {
      patient_id: 'VN-ORDER-1',
      patient_name: 'Nguyễn^Văn An',
      accession_number: 'ACC-CT-0001',
      modality: 'CT',
      station_ae_title: 'CT1',
      start_date: '20261206',
    },
  });
  ctx.assert(created.status() === 201, `order created: ${created.status()} ${await created.text()}`);
  const order = await created.json();

  const badge = async (acc) => {
    await page.goto(`${ctx.baseUrl}/?acc=${acc}`);
    await page.waitForSelector('.sl-table tbody tr');
    await page.waitForFunction(() => document.querySelector('.sl-status')?.dataset.state === 'done');
    await page.waitForFunction(() => document.querySelector('[data-orders]')?.dataset.orders === 'done');
    return page.$eval('.sl-table tbody tr .c-acc', (td) => ({
      text: td.textContent ?? '',
      badge: td.querySelector('.sl-order')?.textContent ?? null,
    }));
  };
  await page.goto(`${ctx.baseUrl}/?acc=ACC-CT-0001`);
  await page.waitForSelector('.sl-table tbody tr .c-acc .sl-order');
  let cell = await badge('ACC-CT-0001');
  ctx.assert(cell.badge === 'Scheduled', `scheduled order shown: ${JSON.stringify(cell)}`);

  const done = await page.request.patch(`${ctx.baseUrl}/api/v1/orders/${order.id}`, { data: { status: 'completed' } });
  ctx.assert(done.ok(), `order completed: ${done.status()}`);
  await page.goto(`${ctx.baseUrl}/?acc=ACC-CT-0001`);
  await page.waitForSelector('.sl-table tbody tr .c-acc .sl-order-completed');
  cell = await badge('ACC-CT-0001');
  ctx.assert(cell.badge === 'Completed' && cell.text.startsWith('ACC-CT-0001'), `completed order shown: ${JSON.stringify(cell)}`);
  await ctx.screenshot(page, 'order-status');

  // The prior has no order: its accession number alone.
  cell = await badge('ACC-CT-0000');
  ctx.assert(cell.badge === null && cell.text === 'ACC-CT-0000', `no order, no badge: ${JSON.stringify(cell)}`);

  // Vietnamese.
  const vi = await ctx.newPage({ viewport: { width: 1400, height: 900 }, locale: 'vi-VN' });
  await vi.goto(`${ctx.baseUrl}/?acc=ACC-CT-0001`);
  await vi.waitForSelector('.sl-table tbody tr .c-acc .sl-order');
  const text = await vi.$eval('.sl-table tbody tr .c-acc .sl-order', (s) => s.textContent);
  ctx.assert(text === 'Đã chụp xong', `Vietnamese status: ${text}`);

  const removed = await page.request.delete(`${ctx.baseUrl}/api/v1/orders/${order.id}`);
  ctx.assert(removed.status() === 204, `order removed: ${removed.status()}`);
}
