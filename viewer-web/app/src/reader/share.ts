// The reading view's "Share" action: a dialog that makes a share link for
// the open study (POST /api/v1/shares) with a validity in days and an
// optional PIN, then shows the link, the PIN and the link's QR code to print
// on the result sheet, with a copy button. Shown only to principals whose
// role may share (or to the local operator when sign-in is off).

import { registerStrings, t } from '../i18n';

registerStrings('en', {
  'sh.button': 'Share',
  'sh.title': 'Share this study with the patient',
  'sh.days': 'Valid for (days)',
  'sh.pin': 'Protect with a 6-digit PIN',
  'sh.create': 'Create link',
  'sh.creating': 'Creating…',
  'sh.link': 'Link',
  'sh.pinLabel': 'PIN',
  'sh.copy': 'Copy link',
  'sh.copied': 'Copied',
  'sh.qr': 'QR code of the link, to print on the result sheet',
  'sh.expires': 'Valid until {date}',
  'sh.close': 'Close',
  'sh.error': 'The link could not be made: {msg}',
});

registerStrings('vi', {
  'sh.button': 'Chia sẻ',
  'sh.title': 'Chia sẻ ca chụp cho người bệnh',
  'sh.days': 'Hiệu lực (ngày)',
  'sh.pin': 'Bảo vệ bằng mã PIN 6 số',
  'sh.create': 'Tạo liên kết',
  'sh.creating': 'Đang tạo…',
  'sh.link': 'Liên kết',
  'sh.pinLabel': 'Mã PIN',
  'sh.copy': 'Sao chép liên kết',
  'sh.copied': 'Đã sao chép',
  'sh.qr': 'Mã QR của liên kết, để in trên phiếu kết quả',
  'sh.expires': 'Hiệu lực đến {date}',
  'sh.close': 'Đóng',
  'sh.error': 'Không tạo được liên kết: {msg}',
});

/** Roles that may make share links (pacs-core/src/access.rs). */
const SHARING_ROLES = ['admin', 'radiologist', 'technologist', 'referrer'];

interface Session {
  name?: string;
  role?: string | null;
  csrf?: string | null;
}

let session: Promise<Session | null> | null = null;

/** Who is signed in (asked once per page load). */
function whoAmI(): Promise<Session | null> {
  session ??= fetch('/api/v1/session', { headers: { Accept: 'application/json' } })
    .then((r) => (r.ok ? (r.json() as Promise<Session>) : null))
    .catch(() => null);
  return session;
}

/** Whether the signed-in principal may make share links: a sharing role, or
 * the local operator of an archive with sign-in off. */
export async function maySharePromise(): Promise<{ may: boolean; csrf?: string }> {
  const s = await whoAmI();
  if (!s) return { may: false };
  const may = (s.role != null && SHARING_ROLES.includes(s.role)) || (s.role == null && s.name === 'anonymous');
  return { may, csrf: s.csrf ?? undefined };
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

interface Made {
  url: string;
  pin: string | null;
  qr: string;
  expires: number;
}

/** Opens the share dialog for `studyUid`. */
export function openShareDialog(studyUid: string, csrf?: string): void {
  document.querySelector('.sh-dialog')?.remove();
  const dlg = el('dialog', 'sh-dialog');
  dlg.setAttribute('aria-label', t('sh.title'));
  const form = el('form', 'sh-form');
  form.method = 'dialog';
  const days = el('input', 'sh-days');
  days.type = 'number';
  days.min = '1';
  days.max = '90';
  days.value = '30';
  days.id = 'sh-days';
  days.name = 'days';
  const daysLabel = el('label', '', t('sh.days'));
  daysLabel.htmlFor = days.id;
  const pin = el('input', 'sh-pin');
  pin.type = 'checkbox';
  pin.id = 'sh-pin';
  pin.name = 'pin';
  pin.checked = true;
  const pinLabel = el('label', 'sh-check');
  pinLabel.append(pin, document.createTextNode(` ${t('sh.pin')}`));
  const create = el('button', 'sh-create', t('sh.create'));
  create.type = 'submit';
  create.dataset.action = 'share-create';
  const close = el('button', 'sh-close', t('sh.close'));
  close.type = 'button';
  close.dataset.action = 'share-close';
  close.onclick = () => dlg.close();
  const result = el('div', 'sh-result');
  result.setAttribute('aria-live', 'polite');
  form.append(el('h2', 'sh-title', t('sh.title')), daysLabel, days, pinLabel, create, result, close);
  dlg.append(form);

  form.onsubmit = async (ev) => {
    ev.preventDefault();
    create.disabled = true;
    create.textContent = t('sh.creating');
    result.replaceChildren();
    try {
      const headers: Record<string, string> = { 'Content-Type': 'application/json', Accept: 'application/json' };
      if (csrf) headers['X-CSRF-Token'] = csrf;
      const r = await fetch('/api/v1/shares', {
        method: 'POST',
        headers,
        body: JSON.stringify({ study: studyUid, expires_in_days: Number(days.value), pin: pin.checked }),
      });
      if (r.status !== 201) throw new Error((await r.text()).trim() || `HTTP ${r.status}`);
      showMade(result, (await r.json()) as Made);
    } catch (e) {
      result.append(el('p', 'sh-error', t('sh.error', { msg: e instanceof Error ? e.message : String(e) })));
    } finally {
      create.disabled = false;
      create.textContent = t('sh.create');
    }
  };
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
}

function showMade(into: HTMLElement, made: Made): void {
  const url = el('input', 'sh-url');
  url.readOnly = true;
  url.value = made.url;
  url.id = 'sh-url';
  const urlLabel = el('label', '', t('sh.link'));
  urlLabel.htmlFor = url.id;
  const copy = el('button', 'sh-copy', t('sh.copy'));
  copy.type = 'button';
  copy.dataset.action = 'share-copy';
  copy.onclick = async () => {
    try {
      await navigator.clipboard.writeText(made.url);
    } catch {
      url.select();
      document.execCommand('copy');
    }
    copy.textContent = t('sh.copied');
  };
  const qr = el('img', 'sh-qr');
  qr.src = made.qr;
  qr.alt = t('sh.qr');
  qr.width = 200;
  qr.height = 200;
  const until = new Date(made.expires * 1000).toLocaleDateString();
  into.append(urlLabel, url, copy);
  if (made.pin) {
    const p = el('p', 'sh-pin-value');
    p.append(document.createTextNode(`${t('sh.pinLabel')}: `), el('strong', '', made.pin));
    into.append(p);
  }
  into.append(qr, el('p', 'sh-expires', t('sh.expires', { date: until })));
}
