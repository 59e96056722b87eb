// The study list: a server-side search of the archive (QIDO-RS), one request
// per search, newest first, paged with limit/offset. Desktop: a table with
// sortable columns; phones (≤ 720 px): one card per study. The search is
// kept in the page's URL so that the back button returns to it.

import './list.css';
import './strings';
import { type DicomJson, num, personName, qido, str } from '../dicomweb';
import { formatDicomDate, getLang, type Lang, onLangChange, setLang, t } from '../i18n';
import { navigate } from '../router';

const MODALITIES = ['CT', 'MR', 'US', 'CR', 'DX', 'MG', 'XA', 'RF', 'NM', 'PT', 'OT'];
const PAGE_SIZES = [25, 50, 100];
const DEBOUNCE_MS = 300;

interface Filters {
  name: string;
  pid: string;
  acc: string;
  from: string; // YYYY-MM-DD
  to: string;
  modality: string;
}

interface Study {
  uid: string;
  name: string;
  pid: string;
  birth: string;
  sex: string;
  date: string;
  time: string;
  modality: string;
  description: string;
  acc: string;
  series?: number;
  instances?: number;
  /** The status of the order with this accession number, if the archive
   * keeps one (`/api/v1/orders`). */
  order?: string;
}

/** Order statuses, least to most final: a study with several steps shows
 * the most advanced. */
const ORDER_RANK = ['scheduled', 'in_progress', 'discontinued', 'cancelled', 'completed'];

type SortKey = 'name' | 'pid' | 'birth' | 'sex' | 'date' | 'modality' | 'description' | 'acc' | 'series' | 'instances';

const COLUMNS: { key: SortKey; label: string; cls: string }[] = [
  { key: 'name', label: 'col.name', cls: 'c-name' },
  { key: 'pid', label: 'col.pid', cls: 'c-pid' },
  { key: 'birth', label: 'col.birth', cls: 'c-birth' },
  { key: 'sex', label: 'col.sex', cls: 'c-sex' },
  { key: 'date', label: 'col.date', cls: 'c-date' },
  { key: 'modality', label: 'col.modality', cls: 'c-mod' },
  { key: 'description', label: 'col.description', cls: 'c-desc' },
  { key: 'acc', label: 'col.acc', cls: 'c-acc' },
  { key: 'series', label: 'col.series', cls: 'c-num c-series' },
  { key: 'instances', label: 'col.instances', cls: 'c-num c-inst' },
];

interface State {
  filters: Filters;
  page: number; // 0-based
  size: number;
  sort?: { key: SortKey; dir: 1 | -1 };
  rows: Study[];
  total?: number;
  status: 'idle' | 'loading' | 'done' | 'error';
  error?: string;
}

/** For the browser tests: how many searches the list has sent. */
declare global {
  interface Window {
    senList?: { searches: number; lastQuery: string };
  }
}

let unmountPrevious: (() => void) | undefined;

export function mountStudyList(root: HTMLElement): void {
  unmountPrevious?.();
  const list = new StudyList(root);
  unmountPrevious = () => list.destroy();
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function toStudy(ds: DicomJson): Study {
  return {
    uid: str(ds, '0020000D'),
    name: personName(ds, '00100010'),
    pid: str(ds, '00100020'),
    birth: str(ds, '00100030'),
    sex: str(ds, '00100040'),
    date: str(ds, '00080020'),
    time: str(ds, '00080030'),
    modality: (ds['00080061']?.Value ?? []).map(String).join(', '),
    description: str(ds, '00081030'),
    acc: str(ds, '00080050'),
    series: num(ds, '00201206'),
    instances: num(ds, '00201208'),
  };
}

/** A patient ID or accession typed in part matches as a prefix. */
function prefix(v: string): string {
  return /[*?]/.test(v) ? v : `${v}*`;
}

function daRange(from: string, to: string): string {
  const da = (d: string) => d.replaceAll('-', '');
  if (from && to) return `${da(from)}-${da(to)}`;
  if (from) return `${da(from)}-`;
  if (to) return `-${da(to)}`;
  return '';
}

export function studiesQuery(f: Filters, page: number, size: number): string {
  const p = new URLSearchParams();
  const name = f.name.trim();
  if (name) {
    p.set('PatientName', name);
    p.set('fuzzymatching', 'true');
  }
  if (f.pid.trim()) p.set('PatientID', prefix(f.pid.trim()));
  if (f.acc.trim()) p.set('AccessionNumber', prefix(f.acc.trim()));
  const range = daRange(f.from, f.to);
  if (range) p.set('StudyDate', range);
  if (f.modality) p.set('ModalitiesInStudy', f.modality);
  p.set('limit', String(size));
  p.set('offset', String(page * size));
  return `/studies?${p.toString()}`;
}

function isoDay(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function viewerUrl(s: Study): string {
  return `/viewer?StudyInstanceUIDs=${encodeURIComponent(s.uid)}`;
}

class StudyList {
  private state: State;
  private timer: number | undefined;
  private abort: AbortController | undefined;
  private offLang: () => void;
  private readonly box: HTMLElement;
  private tbody!: HTMLTableSectionElement;
  private thead!: HTMLTableSectionElement;
  private statusEl!: HTMLElement;
  private pager!: HTMLElement;
  private moreOpen = false;

  constructor(private readonly root: HTMLElement) {
    this.state = { ...this.fromUrl(), rows: [], status: 'idle' };
    this.box = el('div', { class: 'sl' });
    root.append(this.box);
    this.offLang = onLangChange(() => {
      // The list is gone once another page replaced it.
      if (this.box.isConnected) this.build();
      else this.destroy();
    });
    window.senList ??= { searches: 0, lastQuery: '' };
    this.build();
    void this.search();
  }

  destroy(): void {
    this.offLang();
    this.abort?.abort();
    window.clearTimeout(this.timer);
  }

  private fromUrl(): Pick<State, 'filters' | 'page' | 'size'> {
    const q = new URLSearchParams(location.search);
    const size = Number(q.get('size'));
    const page = Number(q.get('page'));
    return {
      filters: {
        name: q.get('name') ?? '',
        pid: q.get('pid') ?? '',
        acc: q.get('acc') ?? '',
        from: q.get('from') ?? '',
        to: q.get('to') ?? '',
        modality: q.get('modality') ?? '',
      },
      size: Number.isInteger(size) && size >= 1 && size <= 200 ? size : PAGE_SIZES[0],
      page: Number.isInteger(page) && page >= 1 ? page - 1 : 0,
    };
  }

  private toUrl(): void {
    if (location.pathname !== '/') return;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(this.state.filters)) if (v) q.set(k, v);
    if (this.state.page > 0) q.set('page', String(this.state.page + 1));
    if (this.state.size !== PAGE_SIZES[0]) q.set('size', String(this.state.size));
    const s = q.toString();
    history.replaceState(null, '', s ? `/?${s}` : '/');
  }

  /** The whole page; called once and on a language change. */
  private build(): void {
    const f = this.state.filters;
    const lang = getLang();
    const langBtn = (l: Lang, label: string) => {
      const b = el('button', { type: 'button', class: 'sl-lang-btn', 'aria-pressed': String(lang === l), 'data-lang': l, lang: l }, label);
      b.onclick = () => setLang(l);
      return b;
    };
    const head = el(
      'header',
      { class: 'sl-head' },
      el('a', { class: 'sl-brand', href: '/' }, el('img', { src: '/favicon.svg', alt: '', width: '24', height: '24' }), 'Sen PACS'),
      el('h1', { class: 'sl-title' }, t('list.title')),
      el('div', { class: 'sl-lang', role: 'group', 'aria-label': t('list.lang') }, langBtn('vi', 'VI'), langBtn('en', 'EN')),
    );
    // Signed in with the login page: a sign-out button (a plain form post,
    // which the server checks for same origin).
    void fetch('/api/v1/session', { headers: { Accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : null))
      .then((s: { session?: boolean } | null) => {
        if (!s?.session) return;
        head.append(el('form', { class: 'sl-signout', method: 'post', action: '/logout' }, el('button', { type: 'submit', class: 'sl-lang-btn' }, t('list.signout'))));
      })
      .catch(() => undefined);

    const field = (key: keyof Filters, label: string, input: HTMLInputElement | HTMLSelectElement, cls = '') => {
      input.name = key;
      input.id = `sl-${key}`;
      input.value = f[key];
      const wrap = el('div', { class: `sl-field ${cls}` }, el('label', { for: input.id }, label), input);
      return wrap;
    };
    const text = (placeholder = '') => el('input', { type: 'search', autocomplete: 'off', spellcheck: 'false', placeholder, enterkeyhint: 'search' });
    const date = () => el('input', { type: 'date' });
    const mod = el('select', {}, el('option', { value: '' }, t('list.modality.all')), ...MODALITIES.map((m) => el('option', { value: m }, m)));

    const form = el(
      'form',
      { class: 'sl-filters', role: 'search' },
      field('name', t('list.name'), text(t('list.name.ph')), 'sl-f-name'),
      field('pid', t('list.pid'), text()),
      field('acc', t('list.acc'), text()),
      field('from', t('list.from'), date(), 'sl-f-date'),
      field('to', t('list.to'), date(), 'sl-f-date'),
      field('modality', t('list.modality'), mod, 'sl-f-mod'),
    );
    const quick = (label: string, days: number) => {
      const b = el('button', { type: 'button', class: 'sl-chip' }, label);
      b.onclick = () => {
        const to = new Date();
        const from = new Date(to.getTime() - days * 86_400_000);
        this.setFilters({ from: isoDay(from), to: isoDay(to) }, 0);
      };
      return b;
    };
    // Phones show the name field and fold the other filters behind a button.
    const secondary = (['pid', 'acc', 'from', 'to', 'modality'] as const).filter((k) => f[k]).length;
    if (!this.moreOpen && secondary === 0) form.classList.add('sl-compact');
    const more = el('button', { type: 'button', class: 'sl-chip sl-more', 'aria-expanded': String(!form.classList.contains('sl-compact')) }, t('list.more') + (secondary ? ` (${secondary})` : ''));
    more.onclick = () => {
      this.moreOpen = form.classList.toggle('sl-compact') === false;
      more.setAttribute('aria-expanded', String(this.moreOpen));
    };
    const clear = el('button', { type: 'button', class: 'sl-chip sl-clear' }, t('list.clear'));
    clear.onclick = () => this.setFilters({ name: '', pid: '', acc: '', from: '', to: '', modality: '' }, 0);
    this.statusEl = el('div', { class: 'sl-status', role: 'status', 'aria-live': 'polite' });
    form.append(el('div', { class: 'sl-quick' }, more, quick(t('list.today'), 0), quick(t('list.days7'), 7), quick(t('list.days30'), 30), this.statusEl, clear));
    form.addEventListener('input', (e) => {
      const target = e.target as HTMLInputElement;
      const key = target.name as keyof Filters;
      if (!(key in this.state.filters)) return;
      this.state.filters[key] = target.value;
      this.state.page = 0;
      // Typing is debounced; a pick from a list or calendar searches at once.
      this.schedule(target.type === 'search' ? DEBOUNCE_MS : 0);
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.schedule(0);
    });

    this.thead = el('thead');
    this.tbody = el('tbody');
    const table = el('table', { class: 'sl-table' }, this.thead, this.tbody);
    this.pager = el('nav', { class: 'sl-pager', 'aria-label': 'pages' });
    this.box.replaceChildren(head, form, el('div', { class: 'sl-scroll' }, table), this.pager);
    this.renderResults();
  }

  private setFilters(patch: Partial<Filters>, page: number): void {
    Object.assign(this.state.filters, patch);
    this.state.page = page;
    for (const [k, v] of Object.entries(patch)) {
      const input = this.box.querySelector<HTMLInputElement>(`#sl-${k}`);
      if (input) input.value = v;
    }
    this.schedule(0);
  }

  private schedule(ms: number): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.search(), ms);
  }

  private async search(): Promise<void> {
    if (!this.box.isConnected) return this.destroy();
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.toUrl();
    const path = studiesQuery(this.state.filters, this.state.page, this.state.size);
    this.state.status = 'loading';
    this.renderStatus();
    const counter = window.senList;
    if (counter) {
      counter.searches += 1;
      counter.lastQuery = path;
    }
    try {
      const { rows, total } = await qido(path, abort.signal);
      if (abort.signal.aborted) return;
      this.state.rows = rows.map(toStudy);
      this.state.total = total;
      this.state.status = 'done';
      void this.loadOrders(abort.signal);
    } catch (e) {
      if (abort.signal.aborted) return;
      this.state.status = 'error';
      this.state.error = e instanceof Error ? e.message : String(e);
    }
    this.renderResults();
  }

  /** The order (exam) status of the studies shown, by accession number,
   * in one request; without orders, or without the right to read them,
   * the list shows none. */
  private async loadOrders(signal: AbortSignal): Promise<void> {
    const accs = [...new Set(this.state.rows.map((r) => r.acc).filter((a) => a && !a.includes(',')))];
    // `data-orders` says when the statuses are in (tests wait for it).
    this.box.dataset.orders = 'loading';
    try {
      if (accs.length === 0) return;
      const r = await fetch(`/api/v1/orders?accession_number=${encodeURIComponent(accs.join(','))}`, {
        headers: { Accept: 'application/json' },
        signal,
      });
      if (!r.ok) return;
      const orders = (await r.json()) as { accession_number: string; status: string }[];
      if (signal.aborted) return;
      const best = new Map<string, string>();
      for (const o of orders) {
        const cur = best.get(o.accession_number);
        if (cur === undefined || ORDER_RANK.indexOf(o.status) > ORDER_RANK.indexOf(cur)) best.set(o.accession_number, o.status);
      }
      for (const row of this.state.rows) row.order = best.get(row.acc);
      this.renderResults();
    } catch {
      // Aborted by a newer search, or the archive unreachable: nothing to show.
    } finally {
      if (!signal.aborted) this.box.dataset.orders = 'done';
    }
  }

  private sorted(): Study[] {
    const rows = [...this.state.rows];
    const s = this.state.sort;
    if (!s) return rows;
    const coll = new Intl.Collator(getLang() === 'vi' ? 'vi' : 'en', { sensitivity: 'base', numeric: true });
    const key = (r: Study): string | number => {
      if (s.key === 'series' || s.key === 'instances') return r[s.key] ?? -1;
      if (s.key === 'date') return r.date + r.time;
      return r[s.key];
    };
    rows.sort((a, b) => {
      const x = key(a);
      const y = key(b);
      const c = typeof x === 'number' && typeof y === 'number' ? x - y : coll.compare(String(x), String(y));
      return c * s.dir;
    });
    return rows;
  }

  private renderStatus(): void {
    const st = this.state;
    this.box.classList.toggle('sl-busy', st.status === 'loading');
    let msg = '';
    if (st.status === 'loading') msg = t('list.loading');
    else if (st.status === 'error') msg = t('list.error', { message: st.error ?? '' });
    else if (st.status === 'done' && st.rows.length === 0) msg = t('list.empty');
    this.statusEl.textContent = msg;
    this.statusEl.dataset.state = st.status;
  }

  private renderResults(): void {
    this.renderStatus();
    // Header with sort buttons.
    const s = this.state.sort;
    const tr = el('tr');
    for (const c of COLUMNS) {
      const dir = s?.key === c.key ? (s.dir === 1 ? 'ascending' : 'descending') : 'none';
      const b = el('button', { type: 'button', class: 'sl-sort', title: t('list.sortHint'), 'data-key': c.key }, t(c.label));
      b.onclick = () => {
        const cur = this.state.sort;
        this.state.sort = cur?.key === c.key ? (cur.dir === 1 ? { key: c.key, dir: -1 } : undefined) : { key: c.key, dir: 1 };
        this.renderResults();
      };
      tr.append(el('th', { class: c.cls, scope: 'col', 'aria-sort': dir }, b));
    }
    this.thead.replaceChildren(tr);

    const rows = this.sorted().map((r) => this.row(r));
    this.tbody.replaceChildren(...rows);
    this.renderPager();
  }

  private row(r: Study): HTMLTableRowElement {
    const href = viewerUrl(r);
    const date = formatDicomDate(r.date);
    const link = el('a', { href, class: 'sl-open' }, r.name || '—');
    const sex = r.sex ? t(`sex.${r.sex}`) : '';
    const cells: [string, Node | string][] = [
      ['c-name', link],
      ['c-pid', r.pid],
      ['c-birth', formatDicomDate(r.birth)],
      ['c-sex', sex === `sex.${r.sex}` ? r.sex : sex],
      ['c-date', date],
      ['c-mod', el('span', { class: 'sl-mod' }, r.modality)],
      ['c-desc', r.description],
      [
        'c-acc',
        r.order && ORDER_RANK.includes(r.order)
          ? el('span', {}, r.acc, ' ', el('span', { class: `sl-order sl-order-${r.order}`, title: t('order.title') }, t(`order.${r.order}`)))
          : r.acc,
      ],
      ['c-num c-series', r.series === undefined ? '' : String(r.series)],
      ['c-num c-inst', r.instances === undefined ? '' : String(r.instances)],
    ];
    const tr = el('tr', { tabindex: '0', 'data-uid': r.uid, 'aria-label': t('list.open', { name: r.name, date }) });
    for (const [cls, content] of cells) tr.append(el('td', { class: cls }, content));
    const open = (e: Event) => {
      e.preventDefault();
      navigate(href);
    };
    link.addEventListener('click', (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) {
        e.stopPropagation();
        return; // the browser opens a new tab or window
      }
      open(e);
    });
    tr.addEventListener('click', (e) => {
      if (!(e.target as HTMLElement).closest('a')) open(e);
    });
    tr.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && e.target === tr) open(e);
    });
    return tr;
  }

  private renderPager(): void {
    const { page, size, total, rows } = this.state;
    const first = rows.length === 0 ? 0 : page * size + 1;
    const last = page * size + rows.length;
    const knownTotal = total ?? last;
    const nf = new Intl.NumberFormat(getLang() === 'vi' ? 'vi-VN' : 'en');
    const range = el(
      'span',
      { class: 'sl-range' },
      t('list.range', { from: nf.format(first), to: nf.format(last), total: total === undefined ? '…' : nf.format(knownTotal) }),
    );
    const prev = el('button', { type: 'button', class: 'sl-page sl-prev' }, `‹ ${t('list.prev')}`);
    prev.disabled = page === 0;
    prev.onclick = () => {
      this.box.querySelector('.sl-scroll')?.scrollTo(0, 0);
      this.state.page = Math.max(0, page - 1);
      this.schedule(0);
    };
    const next = el('button', { type: 'button', class: 'sl-page sl-next' }, `${t('list.next')} ›`);
    next.disabled = total !== undefined ? last >= total : rows.length < size;
    next.onclick = () => {
      this.box.querySelector('.sl-scroll')?.scrollTo(0, 0);
      this.state.page = page + 1;
      this.schedule(0);
    };
    const sizes = [...new Set([...PAGE_SIZES, size])].sort((a, b) => a - b);
    const sel = el('select', { class: 'sl-size', 'aria-label': t('list.pageSize') }, ...sizes.map((n) => el('option', { value: String(n) }, String(n))));
    sel.value = String(size);
    sel.onchange = () => {
      this.state.size = Number(sel.value);
      this.state.page = 0;
      this.schedule(0);
    };
    this.pager.replaceChildren(
      range,
      el('span', { class: 'sl-pager-btns' }, prev, next),
      el('label', { class: 'sl-size-label' }, t('list.pageSize'), sel),
    );
  }
}
