// Cold start of the reading view. Its code (Cornerstone3D) is about 1 MB
// gzipped: on a slow link it takes seconds. While it downloads (preloaded by
// the page, see vite-viewer-page.ts), this part of the entry chunk asks the
// archive for the study's series, the displayed series' metadata (which the
// reader then takes from `prefetchJson` instead of asking again) and a
// rendered preview of its first image (PS3.18 10.4.1.1.3, the series'
// rendered resource answered with its first image by Instance Number),
// shown with a "preview" badge until the reader replaces the page.

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

/** Starts the reader's first requests and returns the boot screen (a preview of the first image once it arrives). */
export function bootReader(params: URLSearchParams): HTMLElement {
  const screen = document.createElement('div');
  screen.className = 'boot';
  const status = document.createElement('p');
  status.className = 'boot-status';
  status.textContent = t('boot.loading');
  screen.append(status);
  const uid = params.getAll('StudyInstanceUIDs').flatMap((u) => u.split(',')).map((u) => u.trim()).find(Boolean);
  if (!uid) return screen;
  const enc = encodeURIComponent;
  // The same paths as reader/study.ts asks for.
  prefetchJson(`/studies?StudyInstanceUID=${enc(uid)}&includefield=00081030&includefield=00080061`);
  void prefetchJson(`/studies/${enc(uid)}/series`).then((rows) => {
    const se = firstSeriesUid(rows, params.get('SeriesInstanceUID'));
    if (!se) return;
    prefetchJson(`/studies/${enc(uid)}/series/${enc(se)}/metadata`);
    const img = new Image();
    img.className = 'boot-preview';
    img.alt = '';
    img.fetchPriority = 'high';
    img.onload = () => {
      if (!screen.isConnected) return;
      performance.mark('sen:first-preview');
      const badge = document.createElement('span');
      badge.className = 'boot-badge';
      badge.dataset.quality = 'preview';
      badge.textContent = t('boot.preview');
      screen.replaceChildren(img, badge, status);
    };
    img.src = `${DICOMWEB_ROOT}/studies/${enc(uid)}/series/${enc(se)}/rendered?accept=image/jpeg&viewport=512,512&quality=75`;
  }, () => undefined);
  return screen;
}
