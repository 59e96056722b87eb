// One viewport of the reading view: a Cornerstone stack viewport, its corner
// overlays, and the operations of the toolbar on it.

import { Enums, type Types, utilities } from '@cornerstonejs/core';
import { formatDicomDate, t } from '../i18n';
import { type DicomJson, num, str } from '../dicomweb';
import { getEngine, outward, prefetch } from './cs';
import { loadSeries, type SeriesInfo } from './study';
import { qualityBadge } from './progressive';

export interface Preset {
  key: string;
  w: number;
  l: number;
}

/** Standard CT windows (width / level, HU). */
export const CT_PRESETS: Preset[] = [
  { key: 'brain', w: 80, l: 40 },
  { key: 'subdural', w: 200, l: 75 },
  { key: 'stroke', w: 40, l: 40 },
  { key: 'lung', w: 1500, l: -600 },
  { key: 'mediastinum', w: 350, l: 50 },
  { key: 'abdomen', w: 400, l: 50 },
  { key: 'liver', w: 150, l: 30 },
  { key: 'bone', w: 2000, l: 300 },
];

let paneCounter = 0;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

type Vec3 = [number, number, number];

/** Patient directions (PS3.3 C.7.6.1.1.1): the letter of each axis's positive and negative direction. */
const AXES: [string, string][] = [['L', 'R'], ['P', 'A'], ['H', 'F']];

/** The patient direction letters of `v` (patient coordinates): its largest
 * component, followed by the second largest when that one is not negligible
 * (an oblique direction, e.g. "RA"). */
export function directionLetters(v: Vec3): string {
  const len = Math.hypot(...v);
  if (!(len > 0)) return '';
  const order = [0, 1, 2].sort((a, b) => Math.abs(v[b]) - Math.abs(v[a]));
  let out = '';
  for (const [k, axis] of order.slice(0, 2).entries()) {
    const c = v[axis] / len;
    if (k > 0 && Math.abs(c) < 0.1) break;
    out += c > 0 ? AXES[axis][0] : AXES[axis][1];
  }
  return out;
}

/** A direction given as letters (Patient Orientation, e.g. "L", "FL") as a vector. */
function lettersToVector(s: string): Vec3 | undefined {
  const v: Vec3 = [0, 0, 0];
  for (const ch of s.toUpperCase()) {
    const axis = AXES.findIndex(([pos, neg]) => ch === pos || ch === neg);
    if (axis < 0) return undefined;
    v[axis] += ch === AXES[axis][0] ? 1 : -1;
  }
  return v.some((c) => c !== 0) ? v : undefined;
}

function numbersOf(ds: DicomJson | undefined, tag: string): number[] {
  return ((ds?.[tag]?.Value ?? []) as unknown[]).map((v) => Number(v)).filter((v) => Number.isFinite(v));
}

function firstItem(ds: DicomJson | undefined, tag: string): DicomJson | undefined {
  return (ds?.[tag]?.Value as DicomJson[] | undefined)?.[0];
}

/** The patient directions of the image's rows (column index increasing) and
 * columns (row index increasing): from Image Orientation (Patient) (also in the
 * functional groups of an enhanced multi-frame image), else from Patient
 * Orientation (0020,0020). None for an image without either (e.g. US). */
export function imageAxes(ds: DicomJson | undefined, frame = 1): [Vec3, Vec3] | undefined {
  const candidates = [
    ds,
    firstItem((ds?.['52009230']?.Value as DicomJson[] | undefined)?.[frame - 1], '00209116'),
    firstItem(firstItem(ds, '52009229'), '00209116'),
  ];
  for (const c of candidates) {
    const iop = numbersOf(c, '00200037');
    if (iop.length === 6) {
      const row: Vec3 = [iop[0], iop[1], iop[2]];
      const col: Vec3 = [iop[3], iop[4], iop[5]];
      if (Math.hypot(...row) > 0 && Math.hypot(...col) > 0) return [row, col];
    }
  }
  const po = ((ds?.['00200020']?.Value ?? []) as unknown[]).map((v) => String(v ?? '').trim());
  if (po.length === 2) {
    const row = lettersToVector(po[0]);
    const col = lettersToVector(po[1]);
    if (row && col) return [row, col];
  }
  return undefined;
}

function fmt(n: number, digits = 0): string {
  return (Math.round(n * 10 ** digits) / 10 ** digits).toFixed(digits);
}

export class Pane {
  readonly root = el('div', 'rd-pane');
  readonly element = el('div', 'rd-vp');
  readonly viewportId = `sen-vp-${++paneCounter}`;
  series: SeriesInfo | undefined;
  private readonly corners = {
    tl: el('div', 'rd-ov rd-ov-tl'),
    tr: el('div', 'rd-ov rd-ov-tr'),
    bl: el('div', 'rd-ov rd-ov-bl'),
    br: el('div', 'rd-ov rd-ov-br'),
  };
  /** Patient direction letters at the middle of each edge. */
  private readonly edges = {
    left: el('div', 'rd-ov rd-orient rd-orient-left'),
    right: el('div', 'rd-ov rd-orient rd-orient-right'),
    top: el('div', 'rd-ov rd-orient rd-orient-top'),
    bottom: el('div', 'rd-ov rd-orient rd-orient-bottom'),
  };
  private readonly hint = el('div', 'rd-drop-hint');
  private readonly progress = el('div', 'rd-pane-progress');
  private readonly progressBar = el('div');
  private overlayQueued = false;
  private loadToken = 0;
  /** Called when the displayed image changes (index). */
  onSlice: (pane: Pane) => void = () => {};
  /** Called after every render (overlay, slider). */
  onRender: (pane: Pane) => void = () => {};

  constructor() {
    this.element.oncontextmenu = (e) => e.preventDefault();
    this.root.dataset.viewportId = this.viewportId;
    this.hint.textContent = t('rd.dropHere');
    this.progress.append(this.progressBar);
    for (const [side, e] of Object.entries(this.edges)) e.dataset.ov = `orient-${side}`;
    this.root.append(
      this.element,
      ...Object.values(this.corners),
      ...Object.values(this.edges),
      this.hint,
      this.progress,
    );
    this.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
      this.queueOverlay();
      this.onSlice(this);
    });
    qualityBadge(this.root, this.element, () => this.viewport);
    for (const ev of [Enums.Events.IMAGE_RENDERED, Enums.Events.VOI_MODIFIED, Enums.Events.CAMERA_MODIFIED]) {
      this.element.addEventListener(ev, () => this.queueOverlay());
    }
  }

  /** Attaches the element to the rendering engine (after it is in the DOM). */
  enable(): void {
    const engine = getEngine();
    if (engine.getViewport(this.viewportId)) return;
    engine.enableElement({
      viewportId: this.viewportId,
      type: Enums.ViewportType.STACK,
      element: this.element as HTMLDivElement,
      defaultOptions: { background: [0, 0, 0] as Types.Point3 },
    });
  }

  /** A still copy of the picture on screen, over the viewport, until removed
   * (while the viewport is enabled again in another rendering engine). */
  cover(): HTMLElement | undefined {
    const src = this.element.querySelector('canvas');
    if (!src || !src.width || !src.height) return undefined;
    const c = document.createElement('canvas');
    c.className = 'rd-vp rd-cover';
    c.width = src.width;
    c.height = src.height;
    c.getContext('2d')?.drawImage(src, 0, 0);
    this.element.after(c);
    return c;
  }

  disable(): void {
    const engine = getEngine();
    if (engine.getViewport(this.viewportId)) engine.disableElement(this.viewportId);
  }

  get viewport(): Types.IStackViewport | undefined {
    return getEngine().getViewport(this.viewportId) as Types.IStackViewport | undefined;
  }

  get index(): number {
    return this.viewport?.getCurrentImageIdIndex() ?? 0;
  }

  get count(): number {
    return this.series?.imageIds.length ?? 0;
  }

  /** Shows `series` from image `index` (default: the first), then loads its neighbours outwards. */
  async setSeries(series: SeriesInfo, index = 0): Promise<void> {
    const token = ++this.loadToken;
    this.series = series;
    this.root.classList.add('rd-has-series');
    this.root.dataset.seriesUid = series.uid;
    await loadSeries(series);
    performance.mark('sen:series-metadata');
    const vp = this.viewport;
    if (!vp || token !== this.loadToken) return;
    const start = Math.max(0, Math.min(index, series.imageIds.length - 1));
    await vp.setStack(series.imageIds, start);
    if (token !== this.loadToken) return;
    vp.render();
    // The neighbours outwards, once the first image is on screen (so that
    // their transfers and decoding do not delay it): rendered, and the
    // frame that shows it produced (queuing hundreds of requests holds the
    // page's thread for a while).
    await this.rendered(500);
    await afterNextFrame();
    if (token !== this.loadToken) return;
    prefetch(outward(series.imageIds, start));
    this.updateProgress();
    this.queueOverlay();
    this.onSlice(this);
  }

  /** Resolves after the next IMAGE_RENDERED of this viewport (or after `timeoutMs`). */
  private rendered(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.element.removeEventListener(Enums.Events.IMAGE_RENDERED, done);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.element.addEventListener(Enums.Events.IMAGE_RENDERED, done);
    });
  }

  /** A message in place of the image (e.g. a series that cannot be shown). */
  showMessage(msg: string): void {
    this.root.classList.remove('rd-has-series');
    this.hint.textContent = msg;
  }

  scrollTo(i: number): void {
    const vp = this.viewport;
    if (!vp || !this.count) return;
    const target = Math.max(0, Math.min(this.count - 1, Math.round(i)));
    if (target !== vp.getCurrentImageIdIndex()) void vp.setImageIdIndex(target);
  }

  scrollBy(d: number, loop = false): void {
    const n = this.count;
    if (!n) return;
    let target = this.index + d;
    if (loop) target = ((target % n) + n) % n;
    this.scrollTo(target);
  }

  /** The image whose position along the normal is nearest to `pos` (mm). */
  indexNearest(pos: number): number | undefined {
    let best: number | undefined;
    let bestD = Infinity;
    this.series?.frames.forEach((f, i) => {
      if (f.position === undefined) return;
      const d = Math.abs(f.position - pos);
      if (d < bestD) {
        bestD = d;
        best = i;
      }
    });
    return best;
  }

  get position(): number | undefined {
    return this.series?.frames[this.index]?.position;
  }

  get voi(): { w: number; l: number } | undefined {
    const range = this.viewport?.getProperties().voiRange;
    if (!range) return undefined;
    const { windowWidth, windowCenter } = utilities.windowLevel.toWindowLevel(range.lower, range.upper);
    return { w: windowWidth, l: windowCenter };
  }

  setWindow(w: number, l: number): void {
    const vp = this.viewport;
    if (!vp) return;
    vp.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(w, l) });
    vp.render();
  }

  /** MR / auto: the window spanning the displayed image's pixel range. */
  autoWindow(): void {
    const img = this.viewport?.getCornerstoneImage();
    if (!img) return;
    const slope = img.slope ?? 1;
    const intercept = img.intercept ?? 0;
    const lo = img.minPixelValue * slope + intercept;
    const hi = img.maxPixelValue * slope + intercept;
    const w = Math.max(1, hi - lo);
    this.setWindow(w, lo + w / 2);
  }

  defaultWindow(): void {
    const vp = this.viewport;
    if (!vp) return;
    vp.resetProperties();
    vp.render();
  }

  get zoom(): number {
    return this.viewport?.getZoom() ?? 1;
  }

  rotate(): void {
    const vp = this.viewport;
    if (!vp) return;
    const r = vp.getViewPresentation().rotation ?? 0;
    vp.setViewPresentation({ rotation: (r + 90) % 360 });
    vp.render();
  }

  flip(horizontal: boolean): void {
    const vp = this.viewport;
    if (!vp) return;
    const p = vp.getViewPresentation();
    vp.setViewPresentation(horizontal ? { flipHorizontal: !p.flipHorizontal } : { flipVertical: !p.flipVertical });
    vp.render();
  }

  invert(): void {
    const vp = this.viewport;
    if (!vp) return;
    vp.setProperties({ invert: !vp.getProperties().invert });
    vp.render();
  }

  reset(): void {
    const vp = this.viewport;
    if (!vp) return;
    vp.setViewPresentation({ rotation: 0, flipHorizontal: false, flipVertical: false });
    vp.resetCamera();
    vp.resetProperties();
    vp.render();
  }

  /** Client (page) coordinates of image pixel (column, row) of the current image. */
  imageToClient(col: number, row: number): [number, number] | undefined {
    const vp = this.viewport;
    const id = vp?.getCurrentImageId();
    if (!vp || !id) return undefined;
    const world = utilities.imageToWorldCoords(id, [col, row]);
    if (!world) return undefined;
    const [x, y] = vp.worldToCanvas(world);
    const rect = this.element.getBoundingClientRect();
    return [rect.left + x, rect.top + y];
  }

  updateProgress(): void {
    const s = this.series;
    if (!s || !s.imageIds.length) return;
    const frac = s.loaded.size / s.imageIds.length;
    this.progressBar.style.width = `${(frac * 100).toFixed(1)}%`;
    this.progress.classList.toggle('rd-done', frac >= 1);
  }

  queueOverlay(): void {
    if (this.overlayQueued) return;
    this.overlayQueued = true;
    requestAnimationFrame(() => {
      this.overlayQueued = false;
      this.updateOverlay();
      this.onRender(this);
    });
  }

  private lines(box: HTMLElement, lines: (string | [string, string])[]): void {
    box.replaceChildren(
      ...lines
        .filter((l) => (Array.isArray(l) ? l[1] : l))
        .map((l) => {
          const d = el('div', undefined, Array.isArray(l) ? l[1] : l);
          if (Array.isArray(l)) d.dataset.ov = l[0];
          return d;
        }),
    );
  }

  /** The patient direction letters at the edges, from the image axes and
   * the screen directions of the current camera (so that rotation and flips
   * are accounted for): each edge shows where the patient direction points. */
  private updateOrientation(ds: DicomJson | undefined, frame: number): void {
    const letters = { left: '', right: '', top: '', bottom: '' };
    const vp = this.viewport;
    const id = vp?.getCurrentImageId();
    const axes = imageAxes(ds, frame);
    const { clientWidth: w, clientHeight: h } = this.element;
    if (vp && id && axes && w > 0 && h > 0) {
      try {
        // Image (column, row) of the canvas centre and of points 10 px right of and below it.
        const at = (x: number, y: number) => utilities.worldToImageCoords(id, vp.canvasToWorld([x, y]));
        const c = at(w / 2, h / 2);
        const r = at(w / 2 + 10, h / 2);
        const d = at(w / 2, h / 2 + 10);
        if (c && r && d) {
          const [rowDir, colDir] = axes;
          const toPatient = (p: Types.Point2, sign: number): Vec3 => {
            const dc = (p[0] - c[0]) * sign;
            const dr = (p[1] - c[1]) * sign;
            return [0, 1, 2].map((k) => dc * rowDir[k] + dr * colDir[k]) as Vec3;
          };
          letters.right = directionLetters(toPatient(r, 1));
          letters.left = directionLetters(toPatient(r, -1));
          letters.bottom = directionLetters(toPatient(d, 1));
          letters.top = directionLetters(toPatient(d, -1));
        }
      } catch {
        // No image plane known to the rendering engine: no markers.
      }
    }
    for (const [side, text] of Object.entries(letters)) {
      const e = this.edges[side as keyof typeof letters];
      if (e.textContent !== text) e.textContent = text;
    }
  }

  updateOverlay(): void {
    if (this.root.classList.contains('rd-has-series') || !this.series) this.hint.textContent = t('rd.dropHere');
    const s = this.series;
    const vp = this.viewport;
    if (!s || !vp || !s.imageIds.length) return;
    const i = this.index;
    const f = s.frames[i];
    const ds = f?.instance;
    const study = s.study;
    this.lines(this.corners.tl, [
      ['patient', study.patientName],
      ['patientId', study.patientId],
      ['birth', [formatDicomDate(study.birthDate), study.sex].filter(Boolean).join(' ')],
    ]);
    this.lines(this.corners.tr, [
      ['study', study.description],
      ['date', [formatDicomDate(study.date), str(ds, '00080030').slice(0, 4).replace(/^(\d\d)(\d\d)$/, '$1:$2')].filter(Boolean).join(' ')],
      ['accession', study.accession],
      ['series', [t('rd.ov.series', { n: s.number ?? '' }), s.description].filter(Boolean).join(' ')],
    ]);
    const thk = num(ds, '00180050');
    this.lines(this.corners.bl, [
      ['index', t(s.multiFrame ? 'rd.ov.frame' : 'rd.ov.im', { i: i + 1, n: s.imageIds.length })],
      ['position', f?.position !== undefined ? t('rd.ov.loc', { z: fmt(f.position, 1) }) : ''],
      ['thickness', thk !== undefined ? t('rd.ov.thk', { t: fmt(thk, 1) }) : ''],
    ]);
    const voi = this.voi;
    const rot = vp.getViewPresentation().rotation ?? 0;
    this.lines(this.corners.br, [
      ['wl', voi ? t('rd.ov.wl', { w: fmt(voi.w), l: fmt(voi.l) }) : ''],
      ['zoom', t('rd.ov.zoom', { z: fmt(this.zoom, 2) })],
      ['rotation', rot ? t('rd.ov.rot', { r: fmt(rot) }) : ''],
    ]);
    this.updateOrientation(ds, f?.frame ?? 1);
    this.root.dataset.index = String(i);
    this.root.dataset.count = String(s.imageIds.length);
    if (voi) {
      this.root.dataset.ww = fmt(voi.w, 2);
      this.root.dataset.wc = fmt(voi.l, 2);
    }
    this.root.dataset.zoom = fmt(this.zoom, 4);
    this.updateProgress();
  }
}

/** Resolves once the browser has produced the next frame (a task after its animation frame). */
export function afterNextFrame(): Promise<void> {
  return new Promise((resolve) => {
    // A hidden page has no frames: a timer stands in.
    const timer = setTimeout(resolve, 100);
    requestAnimationFrame(() => setTimeout(() => {
      clearTimeout(timer);
      resolve();
    }, 0));
  });
}
