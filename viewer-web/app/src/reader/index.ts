// The reading view: series rail, one to four viewports, toolbar, slider and
// cine, measurements, tag browser, the patient's other studies and a prior
// beside the current study with synchronised scrolling. Phones get the
// toolbar at the bottom and a collapsible rail.

import './reader.css';
import './strings';
import { Enums, eventTarget, utilities } from '@cornerstonejs/core';
import { DICOMWEB_ROOT, str } from '../dicomweb';
import { formatDicomDate, getLang, onLangChange, setLang, t } from '../i18n';
import { navigate } from '../router';
import { destroyEngine, ensureCornerstone, getEngine, loadImage, MEASUREMENT_TOOLS, onImageLoaded, prefetch, TOOL_NAMES, type ToolKey, useGpu } from './cs';
import type { ToolGroup } from './tools';

type ToolsModule = typeof import('./tools');
import { icon } from './icons';
import { CT_PRESETS, Pane } from './pane';
import { loadSeries, loadStudy, otherStudies, type SeriesInfo, type StudyInfo, thumbnailUrl } from './study';
import { openTagBrowser } from './tags';
import { maySharePromise, openShareDialog } from './share';
import { foreignAnnotations, isDerivedSeries } from './derived/kinds';
import { saverToggle } from './progressive';

type Layout = 1 | 2 | 4;

interface Measurement {
  tool: string;
  uid: string;
  length?: number;
  angle?: number;
  mean?: number;
  stdDev?: number;
  area?: number;
  min?: number;
  max?: number;
  unit?: string;
  areaUnit?: string;
  imageId?: string;
}

declare global {
  interface Window {
    senViewer?: Record<string, unknown>;
  }
}

let current: Reader | undefined;

/** Longest wait for the displayed series' metadata before the viewport is set up (ms). */
const METADATA_WAIT_MS = 250;

/** Mounts the reading view for `StudyInstanceUIDs` (first = current, others = priors).
 * Its first image drawn dispatches `sen-first-image` on `root`; the promise
 * settles once the first image is shown or the study cannot be. */
export function mountReader(root: HTMLElement, params: URLSearchParams): Promise<void> {
  performance.clearMarks('sen:study-open');
  performance.clearMarks('sen:first-image');
  performance.clearMeasures('sen:first-image');
  performance.mark('sen:study-open');
  current?.destroy();
  current = new Reader(root, params);
  return current.start();
}

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: { cls?: string; text?: string; t?: string; title?: string } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (attrs.cls) e.className = attrs.cls;
  if (attrs.t) {
    e.dataset.t = attrs.t;
    e.textContent = t(attrs.t);
  } else if (attrs.text !== undefined) e.textContent = attrs.text;
  if (attrs.title) {
    e.dataset.tt = attrs.title;
    e.title = t(attrs.title);
    e.setAttribute('aria-label', t(attrs.title));
  }
  e.append(...children);
  return e;
}

function button(iconName: string, title: string, onClick: (b: HTMLButtonElement) => void, cls = ''): HTMLButtonElement {
  const b = h('button', { cls: `rd-btn ${cls}`.trim(), title }, icon(iconName));
  b.type = 'button';
  b.dataset.action = iconName;
  b.onclick = () => onClick(b);
  return b;
}

const round = (n: number | undefined): string => (n === undefined ? '' : String(utilities.roundNumber(n)));

/** Localised on-image labels for the ROI tools (area, mean, SD in the modality unit). */
function roiTextLines(data: { cachedStats?: Record<string, Record<string, unknown>> }, targetId: string): string[] {
  const s = (data.cachedStats?.[targetId] ?? {}) as {
    area?: number; mean?: number; stdDev?: number; areaUnit?: string; modalityUnit?: string; isEmptyArea?: boolean;
  };
  const lines: string[] = [];
  const unit = s.modalityUnit ?? '';
  if (typeof s.area === 'number' && !s.isEmptyArea) lines.push(`${t('rd.m.area')}: ${round(s.area)} ${s.areaUnit ?? ''}`);
  if (typeof s.mean === 'number') lines.push(`${t('rd.m.mean')}: ${round(s.mean)} ${unit}`);
  if (typeof s.stdDev === 'number') lines.push(`${t('rd.m.sd')}: ${round(s.stdDev)} ${unit}`);
  return lines;
}

class Reader {
  private readonly el = h('div', { cls: 'rd' });
  private readonly titleEl = h('div', { cls: 'rd-title' });
  /** The study as a ZIP of DICOM files with a DICOMDIR: a plain link (the
   * `accept` query parameter asks for the ZIP), shown once the study is known. */
  private readonly downloadEl = h('a', { cls: 'rd-btn rd-download', title: 'rd.download' }, icon('download'), h('span', { t: 'rd.download' }));
  /** Saves the image on screen (the active viewport's) as a JPEG, rendered
   * by the server (WADO-RS rendered, PS3.18 10.4.1.1.3). */
  private readonly jpegEl = h('button', { cls: 'rd-btn rd-jpeg', title: 'rd.jpeg' }, icon('download'), h('span', { t: 'rd.jpegShort' }));
  /** Makes a share link for the study (roles that may share only). */
  private readonly shareEl = h('button', { cls: 'rd-btn rd-share', title: 'sh.button' }, icon('share'), h('span', { t: 'sh.button' }));
  private readonly toolsEl = h('div', { cls: 'rd-tools', text: '' });
  private readonly thumbsEl = h('div', { cls: 'rd-thumbs' });
  private readonly othersEl = h('div', { cls: 'rd-others' });
  private readonly measuresEl = h('div', { cls: 'rd-measures' });
  private readonly grid = h('main', { cls: 'rd-grid' });
  private readonly slider = h('input', { cls: 'rd-slider', title: 'rd.slider' });
  private readonly sliderLabel = h('span', { cls: 'rd-slider-label' });
  private readonly fpsInput = h('input', { cls: 'rd-fps', title: 'rd.fps' });
  private readonly playBtn: HTMLButtonElement;
  private readonly status = h('div', { cls: 'rd-status' });
  private readonly panes: Pane[] = [];
  private layout: Layout = 1;
  private active: Pane | undefined;
  private tool: ToolKey;
  private study: StudyInfo | undefined;
  private readonly studies = new Map<string, StudyInfo>();
  private readonly seriesByKey = new Map<string, SeriesInfo>();
  private readonly thumbs = new Map<SeriesInfo, { root: HTMLElement; bar: HTMLElement; img: HTMLImageElement }>();
  private sync = true;
  private cineTimer: number | undefined;
  private menu: HTMLElement | undefined;
  private firstImage = false;
  private destroyed = false;
  private readonly cleanups: (() => void)[] = [];
  /** The tools (./tools.ts, loaded after the first image) and their group. */
  private tools: ToolsModule | undefined;
  private toolsLoading: Promise<ToolsModule> | undefined;
  /** The move of the viewports to the GPU pipeline (after the first image). */
  private gpu: Promise<void> | undefined;
  private toolGroup: ToolGroup | undefined;
  /** The viewports are laid out (the engine exists). */
  private laidOut = false;
  private progressQueued = false;
  private measuresQueued = false;
  private resizeQueued = false;
  private lastMeasurement: Measurement | undefined;
  /** The MPR view while it is open (reader/mpr, loaded on first use). */
  private mpr: { close(): void } | undefined;
  /** CT window presets a hanging protocol asked for, applied when the series is shown. */
  private readonly hangWindows = new Map<Pane, { series: SeriesInfo; key: string }>();

  constructor(private readonly host: HTMLElement, private readonly params: URLSearchParams) {
    const coarse = matchMedia('(pointer: coarse)').matches;
    this.tool = coarse ? 'scroll' : 'wl';
    this.playBtn = button('play', 'rd.play', () => this.toggleCine(), 'rd-play');
  }

  async start(): Promise<void> {
    this.buildDom();
    const uids = this.params.getAll('StudyInstanceUIDs').flatMap((u) => u.split(',')).map((u) => u.trim()).filter(Boolean);
    if (uids.length === 0) {
      this.showStatus(t('rd.noStudy'));
      return;
    }
    this.showStatus(t('rd.loading'));
    try {
      const wanted = this.params.get('SeriesInstanceUID');
      let first: SeriesInfo | undefined;
      // The study's QIDO and the displayed series' metadata travel while the
      // engine and the viewport are set up.
      let seriesKnown: () => void = () => {};
      const seriesListed = new Promise<void>((resolve) => (seriesKnown = resolve));
      const studyLoaded = loadStudy(uids[0], (st) => {
        first = st.series.find((s) => s.uid === wanted) ??
          st.series.find((s) => !['SR', 'PR', 'KO', 'SEG', 'DOC'].includes(s.modality)) ?? st.series[0];
        void loadSeries(first).catch(() => undefined);
        seriesKnown();
      }).then((st) => {
        performance.mark('sen:study-loaded');
        return st;
      });
      studyLoaded.catch(() => undefined);
      // The viewport's set-up blocks the main thread for a while: issue the
      // metadata request first (the series list is back before the engine is ready).
      await Promise.all([
        ensureCornerstone(),
        Promise.race([seriesListed, studyLoaded.then(() => undefined, () => undefined)]),
      ]);
      performance.mark('sen:cornerstone-ready');
      if (this.destroyed) return;
      // The first image's pixels travel and decode (in a worker) while the
      // viewport is set up, which holds the thread for a while; the stack
      // then finds them in the cache. The metadata (asked for at boot,
      // usually in by now) is read first, briefly waited for.
      const shown = first;
      if (shown) {
        const asked = loadSeries(shown).then((s) => {
          if (!this.destroyed && s.imageIds[0]) loadImage(s.imageIds[0]);
        }, () => undefined);
        await Promise.race([asked, new Promise((resolve) => setTimeout(resolve, METADATA_WAIT_MS))]);
        if (this.destroyed) return;
      }
      this.setLayout(1);
      this.laidOut = true;
      performance.mark('sen:viewport-ready');
      const study = await studyLoaded;
      if (this.destroyed || !first) return;
      this.study = study;
      this.studies.set(study.uid, study);
      this.renderTitle();
      this.renderRail();
      this.setActive(this.panes[0]);
      await this.panes[0].setSeries(first, 0);
      if (this.destroyed) return;
      this.showStatus('');
      this.applyModalityDefaults(this.panes[0]);
      this.afterFirstImage(uids.slice(1));
      // A launch that names priors or a series says what to show: no protocol then.
      if (uids.length === 1 && !wanted) void this.hangProtocol(first);
      else this.el.dataset.hanging = 'skipped';
    } catch (e) {
      console.warn(e);
      this.showStatus(t('rd.error', { msg: e instanceof Error ? e.message : String(e) }));
    }
  }

  destroy(): void {
    this.destroyed = true;
    this.stopCine();
    this.mpr?.close();
    this.cleanups.forEach((f) => f());
    for (const p of this.panes) p.disable();
    this.tools?.annotation.state.removeAllAnnotations();
    this.tools?.destroyToolGroup();
    destroyEngine();
    this.el.remove();
    if (current === this) current = undefined;
    delete window.senViewer;
  }

  // ---- DOM ----------------------------------------------------------------

  private buildDom(): void {
    this.host.replaceChildren(this.el);
    const back = button('back', 'rd.back', () => {
      this.destroy();
      navigate('/');
    }, 'rd-back');
    // Phones: the rail is a drawer (closed at first); desktops: a column that can be folded away.
    const railToggle = button('rail', 'rd.rail', () => {
      const phone = matchMedia('(max-width: 760px)').matches;
      this.el.classList.toggle(phone ? 'rd-rail-open' : 'rd-rail-closed');
      this.queueResize();
    }, 'rd-rail-toggle');
    const lang = h('button', { cls: 'rd-btn rd-lang', text: getLang() === 'vi' ? 'EN' : 'VI' });
    lang.type = 'button';
    lang.dataset.action = 'lang';
    lang.lang = getLang() === 'vi' ? 'en' : 'vi';
    lang.onclick = () => setLang(getLang() === 'vi' ? 'en' : 'vi');
    this.cleanups.push(onLangChange(() => {
      lang.textContent = getLang() === 'vi' ? 'EN' : 'VI';
      lang.lang = getLang() === 'vi' ? 'en' : 'vi';
    }));
    this.downloadEl.hidden = true;
    this.downloadEl.dataset.action = 'download';
    this.shareEl.hidden = true;
    this.shareEl.type = 'button';
    this.shareEl.dataset.action = 'share';
    void maySharePromise().then(({ may, csrf }) => {
      if (!may) return;
      this.shareEl.onclick = () => {
        if (this.study) openShareDialog(this.study.uid, csrf);
      };
      this.shareEl.dataset.may = 'true';
      if (this.study) this.shareEl.hidden = false;
    });
    this.jpegEl.hidden = true;
    this.jpegEl.type = 'button';
    this.jpegEl.dataset.action = 'jpeg';
    this.jpegEl.onclick = () => this.downloadJpeg();
    const head = h('header', { cls: 'rd-head' }, back, this.titleEl, this.downloadEl, this.jpegEl, this.shareEl, lang);

    const tools: [ToolKey, string][] = [
      ['scroll', 'scroll'], ['wl', 'wl'], ['zoom', 'zoom'], ['pan', 'pan'],
      ['length', 'length'], ['angle', 'angle'], ['rect', 'rect'], ['ellipse', 'ellipse'],
    ];
    const toolButtons = tools.map(([key, ic]) => {
      const b = button(ic, `rd.tool.${key}`, () => this.selectTool(key), 'rd-tool');
      b.dataset.tool = key;
      return b;
    });
    const sep = () => h('span', { cls: 'rd-sep' });
    this.toolsEl.append(
      railToggle,
      sep(),
      ...toolButtons,
      sep(),
      button('presets', 'rd.presets', (b) => this.openPresetMenu(b)),
      button('rotate', 'rd.rotate', () => this.active?.rotate()),
      button('flipH', 'rd.flipH', () => this.active?.flip(true)),
      button('flipV', 'rd.flipV', () => this.active?.flip(false)),
      button('invert', 'rd.invert', () => this.active?.invert()),
      button('reset', 'rd.reset', () => this.active?.reset()),
      sep(),
      button('layout4', 'rd.layout', (b) => this.openLayoutMenu(b)),
      button('mpr', 'rd.mpr', () => void this.toggleMpr()),
      button('overlay', 'rd.overlay', (b) => {
        b.classList.toggle('rd-on', this.el.classList.toggle('rd-overlays-hidden'));
      }),
      button('sync', 'rd.sync', (b) => {
        this.sync = !this.sync;
        b.classList.toggle('rd-on', this.sync);
      }, 'rd-on rd-sync'),
      button('tags', 'rd.tags', () => this.openTags()),
      saverToggle(),
      button('trash', 'rd.clearMeasurements', () => {
        // The reader's own measurements only: drawings from reports stay.
        const state = this.tools?.annotation.state;
        for (const a of state?.getAllAnnotations() ?? []) {
          if (a.annotationUID && !foreignAnnotations.has(a.annotationUID)) state?.removeAnnotation(a.annotationUID);
        }
        getEngine().render();
        this.queueMeasures();
      }),
    );

    this.slider.type = 'range';
    this.slider.min = '0';
    this.slider.max = '0';
    this.slider.value = '0';
    this.slider.oninput = () => this.active?.scrollTo(Number(this.slider.value));
    this.fpsInput.type = 'number';
    this.fpsInput.min = '1';
    this.fpsInput.max = '60';
    this.fpsInput.value = '15';
    this.fpsInput.onchange = () => {
      if (this.cineTimer !== undefined) this.startCine();
    };
    const bar = h(
      'div',
      { cls: 'rd-bar' },
      button('up', 'rd.prev', () => this.active?.scrollBy(-1), 'rd-step'),
      this.slider,
      button('down', 'rd.next', () => this.active?.scrollBy(1), 'rd-step'),
      this.sliderLabel,
      this.playBtn,
      h('label', { cls: 'rd-fps-label' }, this.fpsInput, h('span', { t: 'rd.fps' })),
    );
    const rail = h(
      'aside',
      { cls: 'rd-rail' },
      h('h3', { t: 'rd.series' }),
      this.thumbsEl,
      h('h3', { t: 'rd.otherStudies' }),
      this.othersEl,
      h('h3', { t: 'rd.measurements' }),
      this.measuresEl,
    );
    const body = h('div', { cls: 'rd-body' }, rail, this.grid, this.status);
    this.el.append(head, body, bar, this.toolsEl);
    this.updateToolButtons();

    const onKey = (e: KeyboardEvent) => this.onKey(e);
    window.addEventListener('keydown', onKey);
    this.cleanups.push(() => window.removeEventListener('keydown', onKey));
    const closeMenu = (e: PointerEvent) => {
      if (this.menu && !this.menu.contains(e.target as Node)) this.closeMenu();
    };
    window.addEventListener('pointerdown', closeMenu, true);
    this.cleanups.push(() => window.removeEventListener('pointerdown', closeMenu, true));
    this.cleanups.push(onLangChange(() => this.retranslate()));
    this.cleanups.push(onImageLoaded(() => this.queueProgress()));
    // Leaving the view by any route (history back included) releases the engine and listeners.
    const mo = new MutationObserver(() => {
      if (!this.el.isConnected && !this.destroyed) this.destroy();
    });
    mo.observe(this.host, { childList: true });
    this.cleanups.push(() => mo.disconnect());
    const ro = new ResizeObserver(() => this.queueResize());
    ro.observe(this.grid);
    this.cleanups.push(() => ro.disconnect());
    for (const ev of [
      'CORNERSTONE_TOOLS_ANNOTATION_COMPLETED',
      'CORNERSTONE_TOOLS_ANNOTATION_MODIFIED',
      'CORNERSTONE_TOOLS_ANNOTATION_REMOVED',
    ]) {
      const f = () => this.queueMeasures();
      eventTargetAdd(ev, f);
      this.cleanups.push(() => eventTargetRemove(ev, f));
    }
    this.installTestApi();
  }

  private showStatus(msg: string): void {
    this.status.textContent = msg;
    this.status.hidden = !msg;
  }

  private retranslate(): void {
    this.el.querySelectorAll<HTMLElement>('[data-t]').forEach((e) => (e.textContent = t(e.dataset.t ?? '')));
    this.el.querySelectorAll<HTMLElement>('[data-tt]').forEach((e) => {
      e.title = t(e.dataset.tt ?? '');
      e.setAttribute('aria-label', e.title);
    });
    this.renderTitle();
    this.renderRail();
    this.panes.forEach((p) => p.updateOverlay());
    this.queueMeasures();
    getEngine().render();
  }

  private renderTitle(): void {
    const s = this.study;
    if (!s) return;
    this.titleEl.replaceChildren(
      h('strong', { text: s.patientName || s.patientId }),
      h('span', { text: [s.patientId, formatDicomDate(s.birthDate), s.sex].filter(Boolean).join(' · ') }),
      h('span', { cls: 'rd-title-study', text: [formatDicomDate(s.date), s.description].filter(Boolean).join(' · ') }),
    );
    document.title = `${s.patientName || s.patientId} — Sen PACS`;
    this.downloadEl.href = `${DICOMWEB_ROOT}/studies/${encodeURIComponent(s.uid)}?accept=application%2Fzip`;
    this.downloadEl.setAttribute('download', `${s.uid}.zip`);
    this.downloadEl.hidden = false;
    if (this.shareEl.dataset.may === 'true') this.shareEl.hidden = false;
    this.jpegEl.hidden = false;
  }

  /** The rendered JPEG of the active viewport's image, saved by the browser. */
  private downloadJpeg(): void {
    const p = this.active ?? this.panes[0];
    const s = p?.series;
    const f = s?.frames[p.index];
    const sop = f ? str(f.instance, '00080018') : undefined;
    if (!s || !f || !sop) return;
    const inst = `${DICOMWEB_ROOT}/studies/${encodeURIComponent(s.study.uid)}/series/${encodeURIComponent(s.uid)}/instances/${encodeURIComponent(sop)}`;
    const a = document.createElement('a');
    a.href = `${s.multiFrame ? `${inst}/frames/${f.frame}` : inst}/rendered?accept=image%2Fjpeg`;
    a.download = s.multiFrame ? `${sop}-${f.frame}.jpg` : `${sop}.jpg`;
    a.dataset.action = 'jpeg-link';
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
  }

  // ---- rail -----------------------------------------------------------------

  private renderRail(): void {
    this.thumbsEl.replaceChildren();
    for (const study of this.studies.values()) {
      if (this.studies.size > 1) {
        const cur = study === this.study;
        this.thumbsEl.append(
          h('div', { cls: 'rd-rail-study', text: `${formatDicomDate(study.date)}${cur ? ` (${t('rd.current')})` : ''}` }),
        );
      }
      // Segmentations, reports and key-object documents are not images: the derived panel lists them.
      for (const s of study.series) if (!isDerivedSeries(s)) this.thumbsEl.append(this.thumb(s));
    }
    this.queueProgress();
  }

  private thumb(s: SeriesInfo): HTMLElement {
    const key = `${s.study.uid}|${s.uid}`;
    this.seriesByKey.set(key, s);
    let entry = this.thumbs.get(s);
    if (!entry) {
      const img = h('img');
      img.alt = '';
      img.draggable = false;
      img.decoding = 'async';
      const bar = h('div');
      const root = h('button', { cls: 'rd-thumb' });
      root.type = 'button';
      root.draggable = true;
      root.dataset.seriesUid = s.uid;
      root.ondragstart = (e) => {
        e.dataTransfer?.setData('application/x-sen-series', key);
        e.dataTransfer?.setData('text/plain', key);
        if (e.dataTransfer) e.dataTransfer.effectAllowed = 'copy';
      };
      root.onclick = () => {
        if (this.active) void this.show(this.active, s);
        if (matchMedia('(max-width: 760px)').matches) this.el.classList.remove('rd-rail-open');
      };
      entry = { root, bar, img };
      this.thumbs.set(s, entry);
      if (this.firstImage) img.src = thumbnailUrl(s);
    }
    const n = s.imageIds.length || s.count;
    const label = s.multiFrame ? t('rd.frames', { n }) : t('rd.images', { n });
    entry.root.replaceChildren(
      h('div', { cls: 'rd-thumb-img' }, entry.img, h('span', { cls: 'rd-thumb-mod', text: s.modality })),
      h('div', { cls: 'rd-thumb-text' },
        h('span', { cls: 'rd-thumb-desc', text: `${s.number ?? ''} ${s.description}`.trim() }),
        h('span', { cls: 'rd-thumb-count', text: label })),
      h('div', { cls: 'rd-thumb-progress' }, entry.bar),
    );
    return entry.root;
  }

  private queueProgress(): void {
    if (this.progressQueued) return;
    this.progressQueued = true;
    requestAnimationFrame(() => {
      this.progressQueued = false;
      for (const [s, { root, bar }] of this.thumbs) {
        const total = s.imageIds.length || s.count;
        const frac = total ? s.loaded.size / total : 0;
        bar.style.width = `${(frac * 100).toFixed(1)}%`;
        root.dataset.loaded = String(s.loaded.size);
        root.dataset.total = String(total);
        root.classList.toggle('rd-loaded', frac >= 1);
        root.classList.toggle('rd-shown', this.panes.some((p) => p.series === s && p.root.isConnected));
      }
      this.panes.forEach((p) => p.updateProgress());
    });
  }

  private afterFirstImage(priors: string[]): void {
    // The tools' chunk once the first image is painted (its script runs on
    // the page's only thread).
    requestAnimationFrame(() => setTimeout(() => void this.loadTools().catch((e: unknown) => console.warn(e)), 0));
    for (const [s, { img }] of this.thumbs) if (!img.src) img.src = thumbnailUrl(s);
    // The rest of the study, series by series, behind the displayed one.
    let base = 100_000;
    for (const s of this.study?.series ?? []) {
      if (isDerivedSeries(s)) continue;
      const b = base;
      base += 100_000;
      void loadSeries(s).then(() => {
        if (this.destroyed) return;
        this.thumb(s);
        prefetch(s.imageIds, b);
        this.queueProgress();
      }, (e) => console.warn(e));
    }
    void this.loadOthers();
    for (const uid of priors) void this.openPrior(uid);
    void this.attachDerived();
  }

  /** SEG overlays, SR findings, saved measurements and key images (a chunk of its own). */
  private async attachDerived(): Promise<void> {
    const study = this.study;
    const rail = this.thumbsEl.parentElement;
    if (!study || !rail) return;
    await this.loadTools();
    const m = await import('./derived/index');
    if (this.destroyed) return;
    const derived = m.attachDerived({
      study,
      rail,
      toolbar: this.toolsEl,
      grid: this.grid,
      viewportIds: () => this.panes.filter((p) => p.root.isConnected).map((p) => p.viewportId),
      activeImageId: () => this.active?.viewport?.getCurrentImageId(),
      showImage: (imageId) => this.showImage(imageId),
      measurementsChanged: () => this.queueMeasures(),
    });
    this.cleanups.push(() => derived.destroy());
    if (window.senViewer) {
      window.senViewer.derived = () => derived.testState();
      window.senViewer.derivedHit = (x: number, y: number) => derived.hitTest(x, y);
    }
  }

  /** Shows an image of the study: in the viewport that has its series, else in the active one. */
  private async showImage(imageId: string): Promise<void> {
    const series = this.study?.series.find((s) => s.imageIds.includes(imageId));
    if (!series) return;
    const index = series.imageIds.indexOf(imageId);
    const pane = this.panes.find((p) => p.root.isConnected && p.series === series) ?? this.active ?? this.panes[0];
    if (!pane) return;
    this.setActive(pane);
    if (pane.series === series) pane.scrollTo(index);
    else await this.show(pane, series, index);
  }

  private async loadOthers(): Promise<void> {
    const study = this.study;
    if (!study) return;
    try {
      const others = await otherStudies(study);
      if (this.destroyed) return;
      this.othersEl.replaceChildren();
      if (others.length === 0) this.othersEl.append(h('div', { cls: 'rd-empty', t: 'rd.noOther' }));
      for (const o of others) {
        const open = h('a', { cls: 'rd-other-link' },
          h('span', { cls: 'rd-other-date', text: formatDicomDate(o.date) }),
          h('span', { cls: 'rd-other-mod', text: o.modalities }),
          h('span', { cls: 'rd-other-desc', text: o.description }));
        open.href = `/viewer?StudyInstanceUIDs=${encodeURIComponent(o.uid)}`;
        open.onclick = (e) => {
          e.preventDefault();
          this.destroy();
          navigate(open.getAttribute('href') ?? '/');
        };
        const cmp = h('button', { cls: 'rd-btn rd-compare', title: 'rd.compare' }, icon('compare'), h('span', { t: 'rd.compare' }));
        cmp.type = 'button';
        cmp.dataset.studyUid = o.uid;
        cmp.onclick = () => void this.openPrior(o.uid);
        const row = h('div', { cls: 'rd-other' }, open, cmp);
        row.dataset.studyUid = o.uid;
        this.othersEl.append(row);
      }
    } catch (e) {
      console.warn(e);
    }
  }

  /** Opens another study of the patient beside the current one. */
  private async openPrior(uid: string): Promise<void> {
    try {
      let prior = this.studies.get(uid);
      if (!prior) {
        prior = await loadStudy(uid);
        if (this.destroyed) return;
        this.studies.set(uid, prior);
        this.renderRail();
        for (const s of prior.series) {
          loadSeries(s).then(() => {
            if (this.destroyed) return;
            const entry = this.thumbs.get(s);
            if (entry && !entry.img.src) entry.img.src = thumbnailUrl(s);
            this.thumb(s);
            this.queueProgress();
          }, (e) => console.warn(e));
        }
      }
      if (this.layout < 2) this.setLayout(2);
      const target = this.panes[1];
      const series = prior.series.find((s) => s.modality === this.panes[0].series?.modality) ?? prior.series[0];
      const pos = this.panes[0].position;
      await loadSeries(series);
      const start = pos !== undefined ? (this.panesIndexNearest(series, pos) ?? 0) : 0;
      await this.show(target, series, start);
    } catch (e) {
      console.warn(e);
      this.showStatus(t('rd.error', { msg: e instanceof Error ? e.message : String(e) }));
      setTimeout(() => this.showStatus(''), 4000);
    }
  }

  private panesIndexNearest(series: SeriesInfo, pos: number): number | undefined {
    let best: number | undefined;
    let bestD = Infinity;
    series.frames.forEach((f, i) => {
      if (f.position !== undefined && Math.abs(f.position - pos) < bestD) {
        bestD = Math.abs(f.position - pos);
        best = i;
      }
    });
    return best;
  }

  // ---- panes and layout -----------------------------------------------------

  private makePane(): Pane {
    const p = new Pane();
    p.onSlice = (pane) => this.onSlice(pane);
    p.onRender = (pane) => {
      if (pane === this.active) this.updateSlider();
      if (!this.firstImage && pane.series && pane.viewport?.getCornerstoneImage()) this.markFirstImage();
    };
    p.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
      if (!this.firstImage && p.series && p.viewport?.getCornerstoneImage()) this.markFirstImage();
    });
    p.root.addEventListener('pointerdown', () => this.setActive(p), true);
    p.root.addEventListener('wheel', () => this.setActive(p), { capture: true, passive: true });
    p.root.addEventListener('dragover', (e) => {
      if (e.dataTransfer?.types.includes('application/x-sen-series')) {
        e.preventDefault();
        e.dataTransfer.dropEffect = 'copy';
        p.root.classList.add('rd-drop');
      }
    });
    p.root.addEventListener('dragleave', () => p.root.classList.remove('rd-drop'));
    p.root.addEventListener('drop', (e) => {
      p.root.classList.remove('rd-drop');
      const key = e.dataTransfer?.getData('application/x-sen-series');
      const s = key ? this.seriesByKey.get(key) : undefined;
      if (!s) return;
      e.preventDefault();
      void this.show(p, s).then(() => this.setActive(p));
    });
    return p;
  }

  /** Shows `s` in `p`; without `index`, at the slice nearest to the position
   * shown in the active (or another) viewport when scrolling is synchronised. */
  private async show(p: Pane, s: SeriesInfo, index?: number): Promise<void> {
    this.stopCine();
    if (index === undefined) {
      const ref = [this.active, ...this.panes].find((q) => q && q !== p && q.root.isConnected && q.position !== undefined);
      const pos = this.sync ? ref?.position : undefined;
      await loadSeries(s);
      index = pos !== undefined ? (this.panesIndexNearest(s, pos) ?? 0) : 0;
    }
    try {
      await p.setSeries(s, index);
    } catch (e) {
      console.warn(e);
      p.showMessage(t('rd.seriesError', { msg: e instanceof Error ? e.message : String(e) }));
      return;
    }
    this.applyModalityDefaults(p);
    this.queueProgress();
    this.updateSlider();
  }

  private applyModalityDefaults(p: Pane): void {
    const s = p.series;
    if (!s) return;
    const hung = this.hangWindows.get(p);
    const preset = hung?.series === s ? CT_PRESETS.find((x) => x.key === hung.key) : undefined;
    if (preset && s.modality === 'CT') p.setWindow(preset.w, preset.l);
    if (hung?.series === s) this.hangWindows.delete(p);
    if (s.multiFrame && s.cineFps) this.fpsInput.value = String(Math.min(60, Math.max(1, s.cineFps)));
    if (s.modality === 'MR' && !p.viewport?.getCornerstoneImage()?.windowWidth) p.autoWindow();
  }

  private setLayout(n: Layout, placed?: SeriesInfo[]): void {
    this.layout = n;
    this.el.dataset.layout = String(n);
    while (this.panes.length < n) this.panes.push(this.makePane());
    const shown = new Set<SeriesInfo | undefined>();
    this.panes.forEach((p, i) => {
      if (i < n) {
        if (!p.root.isConnected) {
          this.grid.append(p.root);
          p.enable();
          toolGroupAdd(this.toolGroup, p.viewportId);
          const s = placed?.[i] ?? p.series ?? (i === 0 ? undefined : this.study?.series.find((x) => !shown.has(x) && !this.panes.slice(0, i).some((q) => q.series === x)));
          if (s) void this.show(p, s);
        } else if (placed?.[i] && p.series !== placed[i]) {
          void this.show(p, placed[i]);
        }
        shown.add(p.series);
      } else if (p.root.isConnected) {
        toolGroupRemove(this.toolGroup, p.viewportId);
        p.disable();
        p.root.remove();
      }
    });
    if (!this.active || !this.active.root.isConnected) this.setActive(this.panes[0]);
    // A new layout fits every image to its (new) viewport.
    getEngine().resize(true, false);
    this.panes.forEach((p) => p.root.isConnected && p.series && p.viewport?.render());
    this.queueProgress();
  }

  private setActive(p: Pane): void {
    if (this.active === p) return;
    this.active?.root.classList.remove('rd-active');
    this.active = p;
    p.root.classList.add('rd-active');
    this.updateSlider();
  }

  private queueResize(): void {
    if (this.resizeQueued) return;
    this.resizeQueued = true;
    requestAnimationFrame(() => {
      this.resizeQueued = false;
      if (!this.destroyed && this.laidOut) getEngine().resize(true, true);
    });
  }

  private onSlice(p: Pane): void {
    if (p === this.active) this.updateSlider();
    if (!this.sync || p !== this.active) return;
    const pos = p.position;
    if (pos === undefined) return;
    for (const q of this.panes) {
      if (q === p || !q.root.isConnected || !q.series || q.series === p.series) continue;
      const i = q.indexNearest(pos);
      if (i !== undefined) q.scrollTo(i);
    }
  }

  private updateSlider(): void {
    const p = this.active;
    const n = p?.count ?? 0;
    this.slider.max = String(Math.max(0, n - 1));
    this.slider.value = String(p?.index ?? 0);
    this.slider.disabled = n < 2;
    this.sliderLabel.textContent = n ? `${(p?.index ?? 0) + 1}/${n}` : '';
  }

  private markFirstImage(): void {
    this.firstImage = true;
    performance.mark('sen:first-image');
    const m = performance.measure('sen:first-image', 'sen:study-open', 'sen:first-image');
    this.el.dataset.firstImageMs = m.duration.toFixed(1);
    preloadLater();
    // main.ts lifts the boot screen's preview off the reader (boot.ts FIRST_IMAGE_EVENT).
    this.host.dispatchEvent(new Event('sen-first-image'));
  }

  // ---- tools ----------------------------------------------------------------

  /** Loads the tools (once), gives them the viewports shown so far and the
   * user's tool; `data-tools="ready"` on the reader (and `senViewer.toolsReady`) then. */
  private loadTools(): Promise<ToolsModule> {
    this.toolsLoading ??= Promise.all([import('./tools'), this.toGpu()]).then(([m]) => {
      if (this.destroyed) return m;
      m.initTools();
      this.tools = m;
      this.toolGroup = m.createToolGroup();
      for (const p of this.panes) if (p.root.isConnected) toolGroupAdd(this.toolGroup, p.viewportId);
      this.configureTools();
      this.el.dataset.tools = 'ready';
      performance.mark('sen:tools-ready');
      return m;
    });
    return this.toolsLoading;
  }

  /** The first image is drawn by Cornerstone's CPU pipeline (cs.ts
   * `ensureCornerstone`); then the viewports shown are enabled again in a new
   * GPU rendering engine, at the same series and image, the old picture kept
   * over each until the new one is drawn. Everything that works with the
   * viewports (tools, derived objects, hanging protocols, MPR) waits for this. */
  private toGpu(): Promise<void> {
    this.gpu ??= (async () => {
      if (this.destroyed || !useGpu()) return;
      const shown = this.panes.filter((p) => p.root.isConnected).map((p) => ({ p, series: p.series, index: p.index, cover: p.cover() }));
      destroyEngine();
      for (const { p } of shown) p.enable();
      getEngine().resize(true, false);
      await Promise.all(shown.map(async ({ p, series, index, cover }) => {
        try {
          if (series && !this.destroyed) await this.show(p, series, index);
        } finally {
          cover?.remove();
        }
      }));
      this.el.dataset.rendering = 'gpu';
    })();
    return this.gpu;
  }

  private configureTools(): void {
    const g = this.toolGroup;
    const m = this.tools;
    if (!g || !m) return;
    g.setToolConfiguration(TOOL_NAMES.rect, { getTextLines: roiTextLines });
    g.setToolConfiguration(TOOL_NAMES.ellipse, { getTextLines: roiTextLines });
    g.setToolConfiguration(TOOL_NAMES.length, {
      getTextLines: (data: { cachedStats?: Record<string, { length?: number; unit?: string }> }, targetId: string) => {
        const s = data.cachedStats?.[targetId];
        return s?.length === undefined || Number.isNaN(s.length) ? [] : [`${round(s.length)} ${s.unit ?? ''}`];
      },
    });
    m.setPrimaryTool(g, TOOL_NAMES[this.tool]);
  }

  private selectTool(key: ToolKey): void {
    this.tool = key;
    if (this.toolGroup && this.tools) this.tools.setPrimaryTool(this.toolGroup, TOOL_NAMES[key]);
    this.updateToolButtons();
  }

  private updateToolButtons(): void {
    this.toolsEl.querySelectorAll<HTMLElement>('[data-tool]').forEach((b) => {
      b.classList.toggle('rd-on', b.dataset.tool === this.tool);
      b.setAttribute('aria-pressed', String(b.dataset.tool === this.tool));
    });
  }

  private openMenu(anchor: HTMLElement, items: { label: string; key: string; onClick: () => void; on?: boolean }[]): void {
    const wasOpen = this.menu?.dataset.anchor === anchor.dataset.action;
    this.closeMenu();
    if (wasOpen) return;
    const menu = h('div', { cls: 'rd-menu' });
    menu.dataset.anchor = anchor.dataset.action ?? '';
    menu.setAttribute('role', 'menu');
    for (const it of items) {
      const b = h('button', { cls: `rd-menu-item${it.on ? ' rd-on' : ''}`, text: it.label });
      b.type = 'button';
      b.dataset.key = it.key;
      b.setAttribute('role', 'menuitem');
      b.onclick = () => {
        this.closeMenu();
        it.onClick();
      };
      menu.append(b);
    }
    this.el.append(menu);
    const r = anchor.getBoundingClientRect();
    const below = r.top < innerHeight / 2;
    menu.style.left = `${Math.max(4, Math.min(r.left, innerWidth - menu.offsetWidth - 4))}px`;
    if (below) menu.style.top = `${r.bottom + 4}px`;
    else menu.style.bottom = `${innerHeight - r.top + 4}px`;
    this.menu = menu;
  }

  private closeMenu(): void {
    this.menu?.remove();
    this.menu = undefined;
  }

  private openPresetMenu(anchor: HTMLElement): void {
    const p = this.active;
    if (!p) return;
    const modality = p.series?.modality ?? '';
    const items = [
      { label: `0  ${t('rd.preset.default')}`, key: 'default', onClick: () => p.defaultWindow() },
      { label: `A  ${t('rd.preset.auto')}`, key: 'auto', onClick: () => p.autoWindow() },
    ];
    if (modality === 'CT') {
      CT_PRESETS.forEach((pr, k) => {
        items.push({
          label: `${k + 1}  ${t(`rd.preset.${pr.key}`)}  ${pr.w}/${pr.l}`,
          key: pr.key,
          onClick: () => p.setWindow(pr.w, pr.l),
        });
      });
    }
    this.openMenu(anchor, items);
  }

  private openLayoutMenu(anchor: HTMLElement): void {
    this.openMenu(
      anchor,
      ([1, 2, 4] as Layout[]).map((n) => ({
        label: n === 1 ? '1 × 1' : n === 2 ? '1 × 2' : '2 × 2',
        key: String(n),
        on: this.layout === n,
        onClick: () => this.setLayout(n),
      })),
    );
  }

  /** Lays the study out by its hanging protocol (reader/hanging, loaded on
   * demand after the first image), unless the user has moved on meanwhile.
   * `data-hanging` on the reader says how it ended (`applied` with
   * `data-protocol`, `none`, `moved-on`, `skipped`). */
  private async hangProtocol(shown: SeriesInfo): Promise<void> {
    const study = this.study;
    if (!study) return;
    let outcome = 'none';
    try {
      const [{ hang }] = await Promise.all([import('./hanging/apply'), this.toGpu()]);
      const h = await hang(study);
      if (!h) return;
      if (this.destroyed || this.mpr || this.layout !== 1 || this.panes[0].series !== shown) {
        outcome = 'moved-on';
        return;
      }
      if (h.prior && !this.studies.has(h.prior.uid)) {
        this.studies.set(h.prior.uid, h.prior);
        this.renderRail();
      }
      this.el.dataset.protocol = h.protocolId;
      const n: Layout = h.viewports.length > 2 ? 4 : 2;
      while (this.panes.length < n) this.panes.push(this.makePane());
      h.viewports.forEach((v, i) => {
        if (v.window) this.hangWindows.set(this.panes[i], { series: v.series, key: v.window });
      });
      this.setLayout(n, h.viewports.map((v) => v.series));
      // The first viewport keeps its series when the protocol puts it there: its window now.
      if (this.panes[0].series === h.viewports[0].series) this.applyModalityDefaults(this.panes[0]);
      outcome = 'applied';
    } catch (e) {
      console.warn(e);
    } finally {
      this.el.dataset.hanging = outcome;
    }
  }

  /** Opens the active viewport's series in MPR in place of the viewports, or closes it. */
  private async toggleMpr(): Promise<void> {
    if (this.mpr) {
      this.mpr.close();
      return;
    }
    const s = this.active?.series;
    if (!s) return;
    this.stopCine();
    await this.loadTools();
    const { openMpr } = await import('./mpr/view');
    if (this.destroyed || this.mpr) return;
    this.el.dataset.mpr = 'true';
    this.mpr = openMpr(this.grid, await loadSeries(s), () => {
      this.mpr = undefined;
      delete this.el.dataset.mpr;
      this.queueResize();
    });
  }

  private openTags(): void {
    const p = this.active;
    const f = p?.series?.frames[p.index];
    if (!p || !f) return;
    openTagBrowser(this.el, f.instance, p.index + 1);
  }

  // ---- cine -----------------------------------------------------------------

  private toggleCine(): void {
    if (this.cineTimer === undefined) this.startCine();
    else this.stopCine();
  }

  private startCine(): void {
    this.stopCine();
    const fps = Math.max(1, Math.min(60, Number(this.fpsInput.value) || 15));
    this.fpsInput.value = String(fps);
    const pane = this.active;
    if (!pane || pane.count < 2) return;
    this.cineTimer = window.setInterval(() => pane.scrollBy(1, true), 1000 / fps);
    this.playBtn.replaceChildren(icon('stop'));
    this.playBtn.classList.add('rd-on');
    this.el.dataset.cine = String(fps);
  }

  private stopCine(): void {
    if (this.cineTimer !== undefined) window.clearInterval(this.cineTimer);
    this.cineTimer = undefined;
    this.playBtn?.replaceChildren(icon('play'));
    this.playBtn?.classList.remove('rd-on');
    delete this.el.dataset.cine;
  }

  // ---- keyboard -------------------------------------------------------------

  private onKey(e: KeyboardEvent): void {
    const target = e.target as HTMLElement | null;
    if (target && (target.closest('input:not([type="range"]), textarea, select, dialog') || target.isContentEditable)) return;
    const p = this.active;
    if (!p) return;
    const n = p.count;
    const page = Math.max(1, Math.round(n / 10));
    const actions: Record<string, () => void> = {
      ArrowUp: () => p.scrollBy(-1),
      ArrowLeft: () => p.scrollBy(-1),
      ArrowDown: () => p.scrollBy(1),
      ArrowRight: () => p.scrollBy(1),
      PageUp: () => p.scrollBy(-page),
      PageDown: () => p.scrollBy(page),
      Home: () => p.scrollTo(0),
      End: () => p.scrollTo(n - 1),
      Escape: () => this.closeMenu(),
      i: () => p.invert(),
      I: () => p.invert(),
      r: () => p.reset(),
      R: () => p.reset(),
      0: () => p.defaultWindow(),
      a: () => p.autoWindow(),
      A: () => p.autoWindow(),
    };
    // Digits 1-8: the CT window presets in menu order.
    if (p.series?.modality === 'CT') {
      CT_PRESETS.forEach((pr, k) => (actions[String(k + 1)] = () => p.setWindow(pr.w, pr.l)));
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const f = actions[e.key];
    if (f) {
      e.preventDefault();
      this.stopCine();
      f();
    }
  }

  // ---- measurements ---------------------------------------------------------

  private queueMeasures(): void {
    if (this.measuresQueued) return;
    this.measuresQueued = true;
    // Statistics are computed while the annotation renders: read them after.
    setTimeout(() => {
      this.measuresQueued = false;
      this.renderMeasures();
    }, 50);
  }

  private measurements(): Measurement[] {
    const out: Measurement[] = [];
    for (const a of this.tools?.annotation.state.getAllAnnotations() ?? []) {
      const tool = a.metadata?.toolName ?? '';
      if (!MEASUREMENT_TOOLS.has(tool) || foreignAnnotations.has(a.annotationUID ?? '')) continue;
      const stats = Object.values((a.data as { cachedStats?: Record<string, Record<string, unknown>> }).cachedStats ?? {})[0] ?? {};
      const n = (k: string) => (typeof stats[k] === 'number' && Number.isFinite(stats[k]) ? (stats[k] as number) : undefined);
      out.push({
        tool,
        uid: a.annotationUID ?? '',
        length: n('length'),
        angle: n('angle'),
        mean: n('mean'),
        stdDev: n('stdDev'),
        area: n('area'),
        min: n('min'),
        max: n('max'),
        unit: (stats.modalityUnit ?? stats.unit) as string | undefined,
        areaUnit: stats.areaUnit as string | undefined,
        imageId: a.metadata?.referencedImageId,
      });
    }
    return out;
  }

  private renderMeasures(): void {
    const ms = this.measurements();
    this.lastMeasurement = ms[ms.length - 1];
    this.measuresEl.replaceChildren();
    if (ms.length === 0) {
      this.measuresEl.append(h('div', { cls: 'rd-empty', t: 'rd.noMeasurements' }));
      return;
    }
    const names: Record<string, string> = {
      Length: 'rd.m.length', Angle: 'rd.m.angle', RectangleROI: 'rd.m.rect', EllipticalROI: 'rd.m.ellipse',
    };
    ms.forEach((m, i) => {
      let value = '';
      if (m.length !== undefined) value = `${round(m.length)} ${m.unit ?? 'mm'}`;
      else if (m.angle !== undefined) value = `${round(m.angle)}°`;
      else if (m.mean !== undefined) {
        value = `${t('rd.m.mean')} ${round(m.mean)} ${m.unit ?? ''} · ${t('rd.m.sd')} ${round(m.stdDev)} · ${t('rd.m.area')} ${round(m.area)} ${m.areaUnit ?? ''}`;
      }
      const jump = h('button', { cls: 'rd-measure-jump' },
        h('span', { cls: 'rd-measure-name', text: `${i + 1}. ${t(names[m.tool] ?? m.tool)}` }),
        h('span', { cls: 'rd-measure-value', text: value }));
      jump.type = 'button';
      jump.onclick = () => this.jumpTo(m.imageId);
      const del = button('close', 'rd.deleteMeasurement', () => {
        this.tools?.annotation.state.removeAnnotation(m.uid);
        getEngine().render();
        this.queueMeasures();
      }, 'rd-measure-del');
      const row = h('div', { cls: 'rd-measure' }, jump, del);
      row.dataset.tool = m.tool;
      this.measuresEl.append(row);
    });
  }

  /** Shows the image a measurement was drawn on, in the viewport that has its series. */
  private jumpTo(imageId: string | undefined): void {
    if (!imageId) return;
    const pane = this.panes.find((p) => p.root.isConnected && p.series?.imageIds.includes(imageId));
    if (!pane) return;
    this.setActive(pane);
    pane.scrollTo(pane.series?.imageIds.indexOf(imageId) ?? 0);
  }

  // ---- test and automation API ------------------------------------------------

  private installTestApi(): void {
    const paneState = (p: Pane) => ({
      index: p.index,
      count: p.count,
      position: p.position,
      ww: p.voi?.w,
      wc: p.voi?.l,
      zoom: p.zoom,
      rotation: p.viewport?.getViewPresentation().rotation ?? 0,
      invert: p.viewport?.getProperties().invert ?? false,
      seriesUid: p.series?.uid,
      studyUid: p.series?.study.uid,
      loaded: p.series?.loaded.size ?? 0,
    });
    window.senViewer = {
      get firstImageMs() {
        const m = performance.getEntriesByName('sen:first-image', 'measure')[0];
        return m ? m.duration : undefined;
      },
      toolsReady: () => this.el.dataset.tools === 'ready',
      panes: () => this.panes.filter((p) => p.root.isConnected).map(paneState),
      activePane: () => this.panes.indexOf(this.active as Pane),
      imageToClient: (pane: number, col: number, row: number) => this.panes[pane]?.imageToClient(col, row),
      scrollTo: (pane: number, i: number) => this.panes[pane]?.scrollTo(i),
      measurements: () => this.measurements(),
      lastMeasurement: () => this.lastMeasurement,
      tool: () => this.tool,
      layout: () => this.layout,
    };
  }
}

/** Fetches the chunks the page names for after the first image (the tools',
 * vite-viewer-page.ts), without running them: `loadTools` runs them. */
function preloadLater(): void {
  const names = document.querySelector<HTMLMetaElement>('meta[name="sen-preload-later"]')?.content.split(' ') ?? [];
  for (const href of names) {
    if (!href.startsWith('/assets/') || document.querySelector(`link[href="${href}"]`)) continue;
    const l = document.createElement('link');
    l.rel = 'modulepreload';
    l.crossOrigin = '';
    l.href = href;
    document.head.append(l);
  }
}

// Small wrappers so that the tool group may be absent while the study loads.
function toolGroupAdd(g: ToolGroup | undefined, viewportId: string): void {
  g?.addViewport(viewportId, 'sen-reader');
}

function toolGroupRemove(g: ToolGroup | undefined, viewportId: string): void {
  g?.removeViewports('sen-reader', viewportId);
}

function eventTargetAdd(ev: string, f: () => void): void {
  eventTarget.addEventListener(ev, f);
}

function eventTargetRemove(ev: string, f: () => void): void {
  eventTarget.removeEventListener(ev, f);
}
