// The reader's derived objects and saved work, loaded as a separate chunk
// after the first image:
// - the study's SEG series overlaid on their source images, with colour,
//   opacity and visibility per segment (`seg.ts`);
// - its SR documents listed with their findings and measurements, each
//   drawn on its image when it has image coordinates (`sr.ts`);
// - the reader's own measurements and key images saved as a TID 1500 SR and
//   a Key Object Selection through STOW-RS, and loaded back (`save.ts`).
// The reader gives it a few hooks (`ReaderHooks`) and nothing else.

import './derived.css';
import { Enums, eventTarget, utilities } from '@cornerstonejs/core';
import { AngleTool, annotation, EllipticalROITool, LengthTool, RectangleROITool, utilities as toolUtils } from '@cornerstonejs/tools';
import { type Naturalized } from 'dcmjs';
import { type DicomJson, getJson, num, str } from '../../dicomweb';
import { registerStrings, t } from '../../i18n';
import { MEASUREMENT_TOOLS } from '../cs';
import { loadSeries, type SeriesInfo, type StudyInfo } from '../study';
import { foreignAnnotations, isDerivedSeries } from './kinds';
import { fetchInstance, numbers, seq, text } from './part10';
import {
  buildKeyObjectSelection, buildMeasurementReport, type ImageRef, KEY_OBJECT_SELECTION, OWN_MANUFACTURER, OWN_MODEL,
  part10, type SavedMeasurement, type Series, stow, StoreError,
} from './save';
import { applyStyle, type SegLayer, loadSegmentation, removeAll, showOnViewport } from './seg';
import { readReport, rectCorners, type SrDocument, type SrGraphic, toolForGraphic } from './sr';

registerStrings('en', {
  'dv.title': 'AI results and reports',
  'dv.none': 'No segmentations or reports.',
  'dv.keyImages': 'Key images',
  'dv.noKeyImages': 'No key images.',
  'dv.keyImage': 'Mark this image as a key image',
  'dv.save': 'Save measurements and key images to the archive',
  'dv.saveShort': 'Save',
  'dv.saving': 'Saving…',
  'dv.saved': 'Saved to the archive.',
  'dv.nothing': 'Nothing to save yet.',
  'dv.forbidden': 'Not saved: your account may not store objects in the archive (ask for a role with the store permission).',
  'dv.signIn': 'Not saved: your session has ended; sign in again.',
  'dv.saveError': 'Not saved: {msg}',
  'dv.loadError': '{what} cannot be shown: {msg}',
  'dv.segment.visible': 'Show or hide this segment',
  'dv.segment.colour': 'Colour',
  'dv.segment.opacity': 'Opacity',
  'dv.notDrawn': 'not drawn (no image coordinates)',
  'dv.image': 'Image {n}',
});
registerStrings('vi', {
  'dv.title': 'Kết quả AI và báo cáo',
  'dv.none': 'Không có phân vùng hay báo cáo.',
  'dv.keyImages': 'Ảnh chính',
  'dv.noKeyImages': 'Chưa có ảnh chính.',
  'dv.keyImage': 'Đánh dấu ảnh này là ảnh chính',
  'dv.save': 'Lưu số đo và ảnh chính vào kho',
  'dv.saveShort': 'Lưu',
  'dv.saving': 'Đang lưu…',
  'dv.saved': 'Đã lưu vào kho.',
  'dv.nothing': 'Chưa có gì để lưu.',
  'dv.forbidden': 'Chưa lưu: tài khoản của bạn không có quyền lưu vào kho (cần vai trò có quyền lưu).',
  'dv.signIn': 'Chưa lưu: phiên đăng nhập đã hết; hãy đăng nhập lại.',
  'dv.saveError': 'Chưa lưu: {msg}',
  'dv.loadError': 'Không hiển thị được {what}: {msg}',
  'dv.segment.visible': 'Hiện hoặc ẩn phân vùng này',
  'dv.segment.colour': 'Màu',
  'dv.segment.opacity': 'Độ mờ',
  'dv.notDrawn': 'không vẽ được (không có toạ độ ảnh)',
  'dv.image': 'Ảnh {n}',
});

/** What the reader lends to this module. */
export interface ReaderHooks {
  study: StudyInfo;
  /** The rail, to which the panel is appended. */
  rail: HTMLElement;
  /** The toolbar, to which the key-image and save buttons are appended. */
  toolbar: HTMLElement;
  /** The viewports' container (new stacks are noticed on it). */
  grid: HTMLElement;
  /** Ids of the viewports on screen. */
  viewportIds(): string[];
  /** The image id on the active viewport. */
  activeImageId(): string | undefined;
  /** Shows this image in a viewport (the active one unless another shows its series). */
  showImage(imageId: string): Promise<void>;
  /** The reader's measurement list needs redrawing. */
  measurementsChanged(): void;
}

/** At most this many derived instances are read per study. */
const MAX_DERIVED_INSTANCES = 50;

interface OwnDoc { series: Series; date: string; ds: Naturalized }

let active: Derived | undefined;

export function attachDerived(h: ReaderHooks): Derived {
  active?.destroy();
  active = new Derived(h);
  void active.start();
  return active;
}

export class Derived {
  private readonly panel = el('div', 'dv-panel');
  private readonly keyList = el('div', 'dv-keys');
  private readonly status = el('div', 'dv-status');
  private readonly keyBtn = el('button', 'rd-btn dv-key');
  private readonly saveBtn = el('button', 'rd-btn dv-save');
  private readonly layers: SegLayer[] = [];
  private readonly reports: SrDocument[] = [];
  private readonly keyImages = new Set<string>();
  private readonly byId = new Map<string, { series: SeriesInfo; index: number }>();
  private readonly bySop = new Map<string, string>();
  private readonly cleanups: (() => void)[] = [];
  /** The last statistics each annotation had: a tool may drop them while
   * its image is off screen, and a save must not lose them. */
  private readonly lastStats = new Map<string, Record<string, unknown>>();
  private ownSr: OwnDoc | undefined;
  private ownKo: OwnDoc | undefined;
  private destroyed = false;
  private loaded = false;

  constructor(private readonly h: ReaderHooks) {
    const section = el('section', 'dv');
    section.append(el('h3', '', t('dv.title')), this.panel, el('h3', '', t('dv.keyImages')), this.keyList, this.status);
    h.rail.append(section);
    this.cleanups.push(() => section.remove());
    this.status.hidden = true;
    this.keyBtn.type = 'button';
    this.keyBtn.dataset.action = 'key-image';
    this.keyBtn.title = t('dv.keyImage');
    this.keyBtn.textContent = '★';
    this.keyBtn.onclick = () => this.toggleKeyImage();
    this.saveBtn.type = 'button';
    this.saveBtn.dataset.action = 'save-work';
    this.saveBtn.title = t('dv.save');
    this.saveBtn.textContent = t('dv.saveShort');
    this.saveBtn.onclick = () => void this.save();
    h.toolbar.append(this.keyBtn, this.saveBtn);
    this.cleanups.push(() => {
      this.keyBtn.remove();
      this.saveBtn.remove();
    });
    // A viewport that shows a new stack gets the segmentations too.
    const onStack = () => void this.showLayers();
    const onImage = () => this.updateKeyButton();
    h.grid.addEventListener(Enums.Events.VIEWPORT_NEW_IMAGE_SET, onStack, true);
    h.grid.addEventListener(Enums.Events.STACK_NEW_IMAGE, onImage, true);
    const onAnnotation = (e: Event) => this.keepStats(e);
    for (const ev of ['CORNERSTONE_TOOLS_ANNOTATION_COMPLETED', 'CORNERSTONE_TOOLS_ANNOTATION_MODIFIED']) {
      eventTarget.addEventListener(ev, onAnnotation);
      this.cleanups.push(() => eventTarget.removeEventListener(ev, onAnnotation));
    }
    this.cleanups.push(() => {
      h.grid.removeEventListener(Enums.Events.VIEWPORT_NEW_IMAGE_SET, onStack, true);
      h.grid.removeEventListener(Enums.Events.STACK_NEW_IMAGE, onImage, true);
    });
  }

  destroy(): void {
    this.destroyed = true;
    this.cleanups.forEach((f) => f());
    removeAll(this.layers);
    foreignAnnotations.clear();
    if (active === this) active = undefined;
  }

  async start(): Promise<void> {
    const images = this.h.study.series.filter((s) => !isDerivedSeries(s));
    const derived = this.h.study.series.filter((s) => ['SEG', 'SR', 'KO'].includes(s.modality));
    await Promise.all(images.map((s) => loadSeries(s).catch(() => undefined)));
    for (const s of images) {
      s.imageIds.forEach((id, index) => {
        this.byId.set(id, { series: s, index });
        const f = s.frames[index];
        this.bySop.set(`${str(f.instance, '00080018')}|${s.multiFrame || (num(f.instance, '00280008') ?? 1) > 1 ? f.frame : 1}`, id);
      });
    }
    let budget = MAX_DERIVED_INSTANCES;
    const docs: { s: SeriesInfo; ds: Naturalized }[] = [];
    for (const s of derived) {
      let rows: DicomJson[] = [];
      try {
        rows = await getJson(`/studies/${encodeURIComponent(this.h.study.uid)}/series/${encodeURIComponent(s.uid)}/instances?includefield=00200013`);
      } catch (e) {
        this.problem(s.modality, e);
      }
      for (const r of rows) {
        if (budget-- <= 0 || this.destroyed) break;
        try {
          docs.push({ s, ds: await fetchInstance(this.h.study.uid, s.uid, str(r, '00080018')) });
        } catch (e) {
          this.problem(s.description || s.modality, e);
        }
      }
    }
    if (this.destroyed) return;
    for (const { s, ds } of docs) {
      const own = text(ds, 'Manufacturer') === OWN_MANUFACTURER && text(ds, 'ManufacturerModelName') === OWN_MODEL;
      try {
        if (s.modality === 'SEG') this.addSeg(ds);
        else if (own) this.noteOwn(s, ds);
        else if (s.modality === 'SR') this.addReport(ds);
        else if (s.modality === 'KO') this.addForeignKo(ds);
      } catch (e) {
        this.problem(text(ds, 'SeriesDescription') || s.modality, e);
      }
    }
    this.restoreOwn();
    this.loaded = true;
    await this.showLayers();
    this.renderPanel();
    this.renderKeys();
    this.updateKeyButton();
    this.h.grid.dataset.derivedLoaded = 'true';
    performance.mark('sen:derived-loaded');
  }

  private keepStats(e: Event): void {
    const a = (e as CustomEvent<{ annotation?: { annotationUID?: string; data?: { cachedStats?: Record<string, Record<string, unknown>> } } }>).detail?.annotation;
    const stats = Object.values(a?.data?.cachedStats ?? {})[0];
    if (a?.annotationUID && stats && Object.values(stats).some((v) => typeof v === 'number' && Number.isFinite(v))) {
      this.lastStats.set(a.annotationUID, { ...stats });
    }
  }

  // ---- sources ---------------------------------------------------------------

  private sources() {
    return {
      bySop: (sop: string, frame: number) => this.bySop.get(`${sop}|${frame}`) ?? this.bySop.get(`${sop}|1`),
      byPosition: (frameOfReference: string, ipp: number[]) => {
        for (const [id, { series, index }] of this.byId) {
          const inst = series.frames[index].instance;
          if (str(inst, '00200052') !== frameOfReference) continue;
          const p = ((inst['00200032']?.Value ?? []) as unknown[]).map(Number);
          if (p.length === 3 && p.every((v, k) => Math.abs(v - ipp[k]) < 0.01)) return id;
        }
        return undefined;
      },
      seriesImageIds: (imageId: string) => this.byId.get(imageId)?.series.imageIds ?? [imageId],
    };
  }

  private imageRef(imageId: string): ImageRef | undefined {
    const e = this.byId.get(imageId);
    if (!e) return undefined;
    const f = e.series.frames[e.index];
    const frames = num(f.instance, '00280008') ?? 1;
    return {
      sop: str(f.instance, '00080018'),
      sopClass: str(f.instance, '00080016'),
      series: e.series.uid,
      frame: frames > 1 ? f.frame : undefined,
      instance: f.instance,
    };
  }

  // ---- SEG -------------------------------------------------------------------

  private addSeg(ds: Naturalized): void {
    this.layers.push(loadSegmentation(ds, this.sources()));
  }

  private async showLayers(): Promise<void> {
    if (!this.loaded) return;
    for (const vp of this.h.viewportIds()) {
      for (const l of this.layers) {
        try {
          await showOnViewport(vp, l);
        } catch (e) {
          console.warn(e);
        }
      }
    }
  }

  private restyle(l: SegLayer): void {
    for (const vp of this.h.viewportIds()) applyStyle(vp, l);
  }

  // ---- SR --------------------------------------------------------------------

  private addReport(ds: Naturalized): void {
    const doc = readReport(ds);
    this.reports.push(doc);
    for (const item of doc.items) {
      if (item.graphic) {
        const uid = this.draw(item.graphic, true);
        if (uid) (item as { annotationUID?: string }).annotationUID = uid;
      }
    }
  }

  /** Draws a SCOORD as a Cornerstone annotation; foreign ones are locked and
   * kept out of the reader's own measurements. Returns its UID. */
  private draw(g: SrGraphic, foreign: boolean): string | undefined {
    const tool = toolForGraphic(g);
    const imageId = this.bySop.get(`${g.sop}|${g.frame}`) ?? this.bySop.get(`${g.sop}|1`);
    const vp = this.h.viewportIds()[0];
    if (!tool || !imageId || !vp) return undefined;
    let pts = g.points;
    if (tool === 'RectangleROI') pts = rectCorners(g.points);
    if (tool === 'EllipticalROI') pts = ellipseHandles(g.points);
    const world = pts.map((p) => utilities.imageToWorldCoords(imageId, p) as [number, number, number]);
    const uid = utilities.uuidv4();
    const options = { referencedImageId: imageId, annotationUID: uid };
    const cls = { Length: LengthTool, Angle: AngleTool, RectangleROI: RectangleROITool, EllipticalROI: EllipticalROITool }[tool];
    cls?.hydrate(vp, world as never, options as never);
    const a = annotation.state.getAnnotation(uid);
    if (!a) return undefined;
    a.invalidated = true;
    if (foreign) {
      foreignAnnotations.add(uid);
      annotation.locking.setAnnotationLocked(uid, true);
    }
    return uid;
  }

  private addForeignKo(ds: Naturalized): void {
    const items = seq(ds, 'ContentSequence').filter((c) => text(c, 'ValueType') === 'IMAGE');
    this.reports.push({
      sop: text(ds, 'SOPInstanceUID'),
      series: text(ds, 'SeriesInstanceUID'),
      title: text(seq(ds, 'ConceptNameCodeSequence')[0], 'CodeMeaning') || 'KO',
      manufacturer: text(ds, 'Manufacturer'),
      date: text(ds, 'ContentDate'),
      time: text(ds, 'ContentTime'),
      items: items.map((c, i) => {
        const ref = seq(c, 'ReferencedSOPSequence')[0];
        return {
          title: t('dv.image', { n: i + 1 }),
          lines: [],
          values: [],
          graphic: { type: 'POINT', points: [], sop: text(ref, 'ReferencedSOPInstanceUID'), frame: numbers(ref, 'ReferencedFrameNumber')[0] ?? 1 },
        };
      }),
    });
  }

  // ---- own documents -----------------------------------------------------------

  private noteOwn(s: SeriesInfo, ds: Naturalized): void {
    const date = `${text(ds, 'ContentDate')}${text(ds, 'ContentTime').padEnd(6, '0')}${String(numbers(ds, 'InstanceNumber')[0] ?? 0).padStart(8, '0')}`;
    const kind = text(ds, 'SOPClassUID') === KEY_OBJECT_SELECTION ? 'ownKo' : 'ownSr';
    const cur = this[kind];
    const n = numbers(ds, 'InstanceNumber')[0] ?? 0;
    const series = { uid: s.uid, number: s.number ?? 0, nextInstance: Math.max(n + 1, (cur?.series.uid === s.uid ? cur.series.nextInstance : 1)) };
    if (!cur || date > cur.date) this[kind] = { series, date, ds };
    else if (cur.series.uid === s.uid) cur.series.nextInstance = Math.max(cur.series.nextInstance, n + 1);
  }

  private restoreOwn(): void {
    if (this.ownSr) {
      for (const item of readReport(this.ownSr.ds).items) {
        if (!item.graphic) continue;
        const uid = this.draw(item.graphic, false);
        const a = uid ? annotation.state.getAnnotation(uid) : undefined;
        const imageId = a?.metadata?.referencedImageId;
        if (!a || !imageId) continue;
        // The saved values until the tool measures again on its image (it
        // does so only once the image is on screen).
        const stats: Record<string, unknown> = {};
        for (const v of item.values) {
          const key = SAVED_STATS[v.code];
          if (key) stats[key] = v.value;
        }
        if (item.values.some((v) => v.unit === "[hnsf'U]")) stats.modalityUnit = 'HU';
        if (stats.length !== undefined) stats.unit = 'mm';
        if (stats.area !== undefined) stats.areaUnit = 'mm²';
        (a.data as { cachedStats?: Record<string, unknown> }).cachedStats = { [`imageId:${imageId}`]: stats };
      }
      this.h.measurementsChanged();
    }
    if (this.ownKo) {
      for (const c of seq(this.ownKo.ds, 'ContentSequence')) {
        if (text(c, 'ValueType') !== 'IMAGE') continue;
        const ref = seq(c, 'ReferencedSOPSequence')[0];
        const id = this.sources().bySop(text(ref, 'ReferencedSOPInstanceUID'), numbers(ref, 'ReferencedFrameNumber')[0] ?? 1);
        if (id) this.keyImages.add(id);
      }
    }
  }

  /** The reader's own measurements, as the SR stores them. */
  private ownMeasurements(): SavedMeasurement[] {
    const out: SavedMeasurement[] = [];
    for (const a of annotation.state.getAllAnnotations()) {
      const tool = a.metadata?.toolName ?? '';
      const uid = a.annotationUID ?? '';
      const imageId = a.metadata?.referencedImageId;
      if (!MEASUREMENT_TOOLS.has(tool) || foreignAnnotations.has(uid) || !imageId) continue;
      const ref = this.imageRef(imageId);
      const world = (a.data?.handles?.points ?? []) as number[][];
      if (!ref || world.length < 2) continue;
      const img = world.map((w) => utilities.worldToImageCoords(imageId, w as [number, number, number]) as [number, number]);
      const current = Object.values((a.data as { cachedStats?: Record<string, Record<string, unknown>> }).cachedStats ?? {})[0] ?? {};
      const last = this.lastStats.get(uid) ?? {};
      const pick = (o: Record<string, unknown>, k: string) =>
        typeof o[k] === 'number' && Number.isFinite(o[k]) ? (o[k] as number) : undefined;
      const n = (k: string) => pick(current, k) ?? pick(last, k);
      const base = { image: ref, mean: n('mean'), stdDev: n('stdDev'), area: n('area'), modalityUnit: (current.modalityUnit ?? last.modalityUnit) as string | undefined };
      if (tool === 'Length' && img.length === 2) {
        const [w0, w1] = world;
        // World coordinates are in mm (PS3.3 C.7.6.2.1.1).
        const length = n('length') ?? Math.hypot(w0[0] - w1[0], w0[1] - w1[1], w0[2] - w1[2]);
        out.push({ ...base, tool, graphicType: 'POLYLINE', points: img, length });
      } else if (tool === 'Angle' && img.length === 3) {
        out.push({ ...base, tool, graphicType: 'POLYLINE', points: img, angle: n('angle') });
      } else if (tool === 'RectangleROI' && img.length === 4) {
        const [tl, tr, bl, br] = img;
        out.push({ ...base, tool, graphicType: 'POLYLINE', points: [tl, tr, br, bl, tl] });
      } else if (tool === 'EllipticalROI' && img.length === 4) {
        out.push({ ...base, tool, graphicType: 'ELLIPSE', points: ellipseAxes(img) });
      }
    }
    return out;
  }

  private async save(): Promise<void> {
    const study = this.h.study.uid;
    const ms = this.ownMeasurements();
    const keys = [...this.keyImages].map((id) => this.imageRef(id)).filter((r): r is ImageRef => !!r);
    if (ms.length === 0 && keys.length === 0) {
      this.say(t('dv.nothing'), 'info');
      return;
    }
    this.saveBtn.disabled = true;
    this.say(t('dv.saving'), 'info');
    try {
      const session = await fetch('/api/v1/session', { headers: { Accept: 'application/json' } })
        .then((r) => (r.ok ? (r.json() as Promise<{ name?: string; csrf?: string | null; may_store?: boolean }>) : undefined))
        .catch(() => undefined);
      // The archive says whether this session may store (and refuses a STOW otherwise).
      if (session?.may_store === false) throw new StoreError(403, 'no store permission');
      const files: ArrayBuffer[] = [];
      const srSeries = this.ownSr?.series ?? newSeries(990);
      const koSeries = this.ownKo?.series ?? newSeries(991);
      const sr = ms.length > 0 ? buildMeasurementReport(study, ms, srSeries, session?.name ?? '') : undefined;
      const ko = keys.length > 0 ? buildKeyObjectSelection(study, keys, koSeries) : undefined;
      if (sr) files.push(part10(sr));
      if (ko) files.push(part10(ko));
      await stow(study, files, session?.csrf ?? undefined);
      const stamp = (d: Naturalized) => `${text(d, 'ContentDate')}${text(d, 'ContentTime')}${text(d, 'InstanceNumber').padStart(8, '0')}`;
      if (sr) this.ownSr = { series: { ...srSeries, nextInstance: srSeries.nextInstance + 1 }, date: stamp(sr), ds: sr };
      if (ko) this.ownKo = { series: { ...koSeries, nextInstance: koSeries.nextInstance + 1 }, date: stamp(ko), ds: ko };
      this.say(t('dv.saved'), 'ok');
    } catch (e) {
      console.warn(e);
      const status = e instanceof StoreError ? e.status : 0;
      if (status === 403) this.say(t('dv.forbidden'), 'error');
      else if (status === 401) this.say(t('dv.signIn'), 'error');
      else this.say(t('dv.saveError', { msg: e instanceof Error ? e.message : String(e) }), 'error');
    } finally {
      this.saveBtn.disabled = false;
    }
  }

  // ---- key images --------------------------------------------------------------

  private toggleKeyImage(): void {
    const id = this.h.activeImageId();
    if (!id || !this.byId.has(id)) return;
    if (this.keyImages.has(id)) this.keyImages.delete(id);
    else this.keyImages.add(id);
    this.renderKeys();
    this.updateKeyButton();
  }

  private updateKeyButton(): void {
    const id = this.h.activeImageId();
    const on = !!id && this.keyImages.has(id);
    this.keyBtn.classList.toggle('rd-on', on);
    this.keyBtn.setAttribute('aria-pressed', String(on));
  }

  private renderKeys(): void {
    this.keyList.replaceChildren();
    if (this.keyImages.size === 0) this.keyList.append(el('div', 'rd-empty', t('dv.noKeyImages')));
    for (const id of this.keyImages) {
      const e = this.byId.get(id);
      if (!e) continue;
      const b = el('button', 'dv-item', `${e.series.description || e.series.modality} · ${e.index + 1}/${e.series.imageIds.length}`);
      b.type = 'button';
      b.dataset.keyImage = id;
      b.onclick = () => void this.h.showImage(id);
      this.keyList.append(b);
    }
  }

  // ---- panel -------------------------------------------------------------------

  private renderPanel(): void {
    this.panel.replaceChildren();
    if (this.layers.length === 0 && this.reports.length === 0) this.panel.append(el('div', 'rd-empty', t('dv.none')));
    for (const l of this.layers) {
      const box = el('div', 'dv-doc dv-seg');
      box.dataset.sop = l.sop;
      box.append(el('div', 'dv-doc-title', `SEG · ${l.label}`));
      for (const s of l.segments) {
        const row = el('div', 'dv-segment');
        row.dataset.segment = String(s.number);
        const vis = el('input', 'dv-vis');
        vis.type = 'checkbox';
        vis.checked = s.visible;
        vis.title = t('dv.segment.visible');
        vis.onchange = () => {
          s.visible = vis.checked;
          this.restyle(l);
        };
        const colour = el('input', 'dv-colour');
        colour.type = 'color';
        colour.title = t('dv.segment.colour');
        colour.value = `#${s.rgb.map((c) => c.toString(16).padStart(2, '0')).join('')}`;
        colour.oninput = () => {
          const v = colour.value;
          s.rgb = [1, 3, 5].map((k) => parseInt(v.slice(k, k + 2), 16)) as [number, number, number];
          this.restyle(l);
        };
        const opacity = el('input', 'dv-opacity');
        opacity.type = 'range';
        opacity.min = '0';
        opacity.max = '100';
        opacity.value = String(Math.round(s.opacity * 100));
        opacity.title = t('dv.segment.opacity');
        opacity.oninput = () => {
          s.opacity = Number(opacity.value) / 100;
          this.restyle(l);
        };
        const label = el('button', 'dv-segment-label', s.label);
        label.type = 'button';
        const first = l.imageIds[0];
        label.onclick = () => first && void this.h.showImage(first);
        row.append(vis, colour, label, opacity);
        box.append(row);
      }
      this.panel.append(box);
    }
    for (const doc of this.reports) {
      const box = el('div', 'dv-doc dv-sr');
      box.dataset.sop = doc.sop;
      box.append(el('div', 'dv-doc-title', [doc.title, doc.manufacturer].filter(Boolean).join(' · ')));
      doc.items.forEach((item, i) => {
        const b = el('button', 'dv-item');
        b.type = 'button';
        b.dataset.index = String(i);
        b.append(el('span', 'dv-item-title', item.title));
        for (const line of item.lines) b.append(el('span', 'dv-item-line', line));
        const g = item.graphic;
        const id = g ? this.sources().bySop(g.sop, g.frame) : undefined;
        if (id) {
          b.dataset.imageId = id;
          b.onclick = () => void this.h.showImage(id);
        } else {
          b.disabled = true;
          if (item.value) b.append(el('span', 'dv-item-line', t('dv.notDrawn')));
        }
        const uid = (item as { annotationUID?: string }).annotationUID;
        if (uid) b.dataset.annotationUid = uid;
        box.append(b);
      });
      this.panel.append(box);
    }
  }

  private problem(what: string, e: unknown): void {
    console.warn(e);
    this.say(t('dv.loadError', { what, msg: e instanceof Error ? e.message : String(e) }), 'error');
  }

  private say(msg: string, kind: 'ok' | 'error' | 'info'): void {
    this.status.hidden = !msg;
    this.status.textContent = msg;
    this.status.dataset.kind = kind;
  }

  /** The annotation drawn at this page point, if any (for the browser tests). */
  hitTest(clientX: number, clientY: number): string | undefined {
    const vp = document.elementsFromPoint(clientX, clientY).find((e) => e.classList.contains('rd-vp')) as HTMLDivElement | undefined;
    if (!vp) return undefined;
    const r = vp.getBoundingClientRect();
    return toolUtils.getAnnotationNearPoint(vp, [clientX - r.left, clientY - r.top], 6)?.annotationUID;
  }

  /** State for the browser tests. */
  testState(): Record<string, unknown> {
    return {
      loaded: this.loaded,
      segmentations: this.layers.map((l) => ({ id: l.segmentationId, label: l.label, segments: l.segments.map((s) => ({ ...s })) })),
      reports: this.reports.map((d) => ({ sop: d.sop, title: d.title, items: d.items })),
      keyImages: [...this.keyImages],
      ownSr: this.ownSr ? text(this.ownSr.ds, 'SOPInstanceUID') : undefined,
      ownKo: this.ownKo ? text(this.ownKo.ds, 'SOPInstanceUID') : undefined,
      status: this.status.hidden ? '' : this.status.textContent,
    };
  }
}

/** The numeric concepts the viewer saves (save.ts), to the tools' statistics. */
const SAVED_STATS: Record<string, string> = {
  'SCT:410668003': 'length',
  'SCT:42798000': 'area',
  'SCT:373098007': 'mean',
  'SCT:386136009': 'stdDev',
  'SCT:1483009': 'angle',
};

function newSeries(number: number): Series {
  return { uid: dcmUid(), number, nextInstance: 1 };
}

/** A UID under 2.25 (PS3.5 B.2) from 128 random bits. */
function dcmUid(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  let n = 0n;
  for (const x of b) n = (n << 8n) | BigInt(x);
  return `2.25.${n.toString()}`;
}

/** DICOM ELLIPSE (major axis end points, then minor) to EllipticalROI's
 * handles: bottom, top, left, right (an axis-aligned ellipse). */
function ellipseHandles(p: [number, number][]): [number, number][] {
  const [a, b, c, d] = p;
  const vertical = Math.abs(a[0] - b[0]) < Math.abs(c[0] - d[0]) ? [a, b] : [c, d];
  const horizontal = vertical[0] === a ? [c, d] : [a, b];
  const [top, bottom] = vertical[0][1] < vertical[1][1] ? vertical : [vertical[1], vertical[0]];
  const [left, right] = horizontal[0][0] < horizontal[1][0] ? horizontal : [horizontal[1], horizontal[0]];
  return [bottom, top, left, right];
}

/** EllipticalROI's handles (bottom, top, left, right) to a DICOM ELLIPSE:
 * the major axis' end points first (PS3.3 C.18.6.1.2). */
function ellipseAxes(p: [number, number][]): [number, number][] {
  const [bottom, top, left, right] = p;
  const len = (u: number[], v: number[]) => Math.hypot(u[0] - v[0], u[1] - v[1]);
  return len(bottom, top) >= len(left, right) ? [top, bottom, left, right] : [left, right, top, bottom];
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, textContent?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (textContent !== undefined) e.textContent = textContent;
  return e;
}
