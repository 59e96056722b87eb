// Cold start of the reading view. Its code (Cornerstone3D) is about 1 MB
// gzipped: on a slow link it takes seconds, and on any link running it
// holds the page's only thread for a few hundred milliseconds. While it
// downloads (preloaded by the page, see vite-viewer-page.ts), this part of
// the entry chunk takes the study's series list (asked for by the page
// itself, a `preload` link the server adds for the study in the address,
// viewer-web/src/lib.rs), then asks for the displayed series' metadata
// (which the reader then takes from `prefetchJson` instead of asking
// again) and the series' first image by Instance Number rendered by the
// archive at the image's own window (PS3.18 10.4.1.1.3), the window the
// reader starts with:
// - on a fast link (the page itself fetched within `FAST_PAGE_MS` of
//   its request, no data saver) as PNG at the image's own size: the
//   lossless frame through that window, the same 8-bit picture the reader
//   draws at first, so it is the first image, shown without a badge;
// - otherwise (slow link, data saver) as a small JPEG, shown with a
//   "preview" badge.
// The reader's code runs only once that image is on screen (`ready`), and
// the boot screen stays over the reader until the reader's first image is
// drawn (main.ts): the same image at the same window.

import { type DicomJson, DICOMWEB_ROOT, num, prefetchJson, str } from './dicomweb';
import { registerStrings, t } from './i18n';

registerStrings('en', { 'boot.preview': 'Preview', 'boot.loading': 'Loading the viewer…' });
registerStrings('vi', { 'boot.preview': 'Xem trước', 'boot.loading': 'Đang tải trình xem…' });

/** Series the reader does not open first (not images). */
export const NON_IMAGE_MODALITIES = ['SR', 'PR', 'KO', 'SEG', 'DOC'];

/** The series the reader opens first: the one asked for, else the first image series by Series Number. */
export function firstSeriesUid(rows: DicomJson[], wanted: string | null): string | undefined {
  const sorted = [...rows].sort((a, b) => (num(a, '00200011') ?? 1e9) - (num(b, '00200011') ?? 1e9));
  const pick =
    sorted.find((s) => str(s, '0020000E') === wanted) ??
    sorted.find((s) => !NON_IMAGE_MODALITIES.includes(str(s, '00080060'))) ??
    sorted[0];
  return pick ? str(pick, '0020000E') : undefined;
}

/** The event the reader dispatches on its host element when its first image is drawn. */
export const FIRST_IMAGE_EVENT = 'sen-first-image';

/** Longest wait for the preview before the reader's code runs anyway (ms). */
const PREVIEW_WAIT_MS = 1000;

/** localStorage keys shared with reader/progressive.ts: the data saver (`1` = on), and a forced loading mode. */
export const DATA_SAVER_KEY = 'sen.dataSaver';
export const QUALITY_KEY = 'sen.quality';

/** A page fetched within this (ms from its request to its last byte: a round trip and about
 * 1.5 KB) came over a fast link. A link of 150 ms round trip or more takes longer; a loaded
 * 2-core machine on localhost took 100–150 ms at times. Chromium's `navigator.connection` is
 * no help: with no estimate yet it reports 100 ms and 1.5 Mbit/s on localhost. */
const FAST_PAGE_MS = 150;

/** What the boot screen shows first: the lossless first image (`full`) or a lossy preview. */
export type BootQuality = 'full' | 'preview';

/** `full` on a fast link with no data saver (asked for, or the browser's Save-Data), else `preview`. */
export function bootQuality(): BootQuality {
  try {
    if (localStorage.getItem(DATA_SAVER_KEY) === '1') return 'preview';
    const forced = localStorage.getItem(QUALITY_KEY);
    if (forced === 'progressive') return 'preview';
    if (forced === 'full') return 'full';
  } catch {
    // Storage refused: decide from the link alone.
  }
  const conn = (navigator as Navigator & { connection?: { saveData?: boolean } }).connection;
  if (conn?.saveData) return 'preview';
  const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
  if (!nav || !(nav.responseEnd > 0) || !(nav.requestStart > 0)) return 'preview';
  return nav.responseEnd - nav.requestStart < FAST_PAGE_MS ? 'full' : 'preview';
}

export interface Boot {
  /** The boot screen: a preview of the first image once it arrives. */
  screen: HTMLElement;
  /** Resolves once the preview is painted, it failed, or it is late. */
  ready: Promise<void>;
}

/** Starts the reader's first requests and returns the boot screen. */
export function bootReader(params: URLSearchParams): Boot {
  let settle: () => void = () => {};
  const ready = new Promise<void>((resolve) => (settle = resolve));
  const timer = window.setTimeout(() => settle(), PREVIEW_WAIT_MS);
  const done = () => {
    window.clearTimeout(timer);
    settle();
  };
  const screen = document.createElement('div');
  screen.className = 'boot';
  const status = document.createElement('p');
  status.className = 'boot-status';
  status.textContent = t('boot.loading');
  screen.append(status);
  const uid = params.getAll('StudyInstanceUIDs').flatMap((u) => u.split(',')).map((u) => u.trim()).find(Boolean);
  if (!uid) {
    done();
    return { screen, ready };
  }
  const enc = encodeURIComponent;
  // The same paths as reader/study.ts asks for; the first two are the
  // page's preloads (the same URLs, no request headers of their own).
  prefetchJson(`/studies?StudyInstanceUID=${enc(uid)}&includefield=00081030&includefield=00080061`, true);
  void prefetchJson(`/studies/${enc(uid)}/series`, true).then((rows) => {
    const se = firstSeriesUid(rows, params.get('SeriesInstanceUID'));
    if (!se) {
      done();
      return;
    }
    prefetchJson(`/studies/${enc(uid)}/series/${enc(se)}/metadata`);
    const quality = bootQuality();
    const img = new Image();
    img.className = 'boot-preview';
    img.alt = '';
    img.fetchPriority = 'high';
    img.onload = () => {
      if (!screen.isConnected) {
        done();
        return;
      }
      screen.dataset.quality = quality;
      if (quality === 'preview') {
        const badge = document.createElement('span');
        badge.className = 'boot-badge';
        badge.dataset.quality = 'preview';
        badge.textContent = t('boot.preview');
        screen.replaceChildren(img, badge, status);
      } else {
        screen.replaceChildren(img, status);
      }
      // Painted at the next frame; the reader's code may run after it.
      requestAnimationFrame(() => {
        performance.mark('sen:boot-image', { detail: { quality } });
        if (quality === 'preview') performance.mark('sen:first-preview');
        window.setTimeout(done, 0);
      });
    };
    img.onerror = done;
    const series = `${DICOMWEB_ROOT}/studies/${enc(uid)}/series/${enc(se)}/rendered`;
    img.src = quality === 'full' ? `${series}?accept=image/png` : `${series}?accept=image/jpeg&viewport=512,512&quality=75`;
  }, done);
  return { screen, ready };
}
