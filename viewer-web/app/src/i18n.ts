// Languages of the viewer: Vietnamese and English. The default follows the
// browser; the choice is kept in localStorage. Each part of the app
// registers its own strings with `registerStrings`.

export type Lang = 'vi' | 'en';
type Dict = Record<string, string>;

const dicts: Record<Lang, Dict> = { vi: {}, en: {} };
const listeners = new Set<() => void>();
const STORAGE_KEY = 'sen-pacs.lang';

function initialLang(): Lang {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved === 'vi' || saved === 'en') return saved;
  const nav = (navigator.languages?.[0] ?? navigator.language ?? 'en').toLowerCase();
  return nav.startsWith('vi') ? 'vi' : 'en';
}

let current: Lang = initialLang();

export function registerStrings(lang: Lang, strings: Dict): void {
  Object.assign(dicts[lang], strings);
}

export function getLang(): Lang {
  return current;
}

export function setLang(lang: Lang): void {
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
  listeners.forEach((f) => f());
}

/** Called after every language change (re-render your texts). */
export function onLangChange(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

/** The string for `key` in the current language; `{name}` placeholders are filled from `vars`. */
export function t(key: string, vars: Record<string, string | number> = {}): string {
  const s = dicts[current][key] ?? dicts.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k: string) => String(vars[k] ?? `{${k}}`));
}

/** The locale used for dates: Vietnamese, or the browser's English variant. */
export function dateLocale(): string {
  if (current === 'vi') return 'vi-VN';
  const nav = navigator.languages?.find((l) => l.toLowerCase().startsWith('en'));
  return nav ?? 'en-GB';
}

/** A DICOM DA (YYYYMMDD) in the current locale's date format: `15/03/2026`
 * in Vietnamese, `15 Mar 2026` (or the browser's English variant) in English. */
export function formatDicomDate(da: string | undefined): string {
  if (!da || !/^\d{8}$/.test(da)) return da ?? '';
  const d = new Date(Date.UTC(+da.slice(0, 4), +da.slice(4, 6) - 1, +da.slice(6, 8)));
  const opts: Intl.DateTimeFormatOptions =
    current === 'vi'
      ? { timeZone: 'UTC', day: '2-digit', month: '2-digit', year: 'numeric' }
      : { timeZone: 'UTC', day: 'numeric', month: 'short', year: 'numeric' };
  return new Intl.DateTimeFormat(dateLocale(), opts).format(d);
}

document.documentElement.lang = current;
