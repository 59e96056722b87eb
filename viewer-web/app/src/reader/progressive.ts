// Progressive loading over slow links: a series is first shown from lossy
// previews (one `multipart/related` stream of server-rendered JPEGs for the
// whole series, PS3.18 10.4.3.3), then every slice is replaced by its
// lossless frame as it arrives, the slice on screen first.
//
// The previews are rendered by the archive with the series' own window
// (Window Center / Width of its first image, PS3.3 C.11.2.1.2, LINEAR), the
// window the viewport starts with; each 8-bit value is mapped back through
// that window into modality units and upsampled to the frame's size, so a
// preview sits in the viewport exactly where and as bright as the lossless
// image, and the switch does not jump. Series without such a window
// (colour, MONOCHROME1, multi-frame, other VOI functions) load lossless only.
//
// The previews are cached under the image's own `wadors:` id (the loader for
// that scheme is wrapped), so the stack, the tools and every other module
// keep the ids they know; `isPreview(image)` tells them apart, and
// `imageQualityStatus` is LOSSY on a preview.
//
// Modes: `full` (fast link: lossless only), `progressive` (slow link, or
// asked for), `saver` (data saver, kept in localStorage: previews only; a
// slice becomes lossless when the reader stops on it or asks for it).

import {
  cache,
  Enums,
  getRenderingEngines,
  imageLoader,
  metaData,
  type Types,
  utilities,
} from '@cornerstonejs/core';
import { wadors } from '@cornerstonejs/dicom-image-loader';
import { registerStrings, t } from '../i18n';
import { seriesOfImageId, type SeriesInfo } from './study';
import { type DicomJson, num, str } from '../dicomweb';
import { DATA_SAVER_KEY, QUALITY_KEY } from '../boot';
import './progressive.css';

export type QualityMode = 'full' | 'progressive' | 'saver';

/** Side of the square the previews are rendered into (the server fits inside it, never scales up). */
const PREVIEW_SIDE = 256;
const PREVIEW_QUALITY = 60;
/** A link slower than this (Mbit/s, measured) gets previews first. */
const SLOW_DOWNLINK_MBPS = 5;
/** Lossless frames in flight at once. */
const FULL_CONCURRENCY = 2;
/** Data saver: a slice shown this long becomes lossless. */
const SAVER_DWELL_MS = 1200;

registerStrings('en', {
  'rd.q.preview': 'Preview',
  'rd.q.full': 'Full quality',
  'rd.q.previewTitle': 'A lossy preview is on screen; the lossless image replaces it. Click to load it now.',
  'rd.q.fullTitle': 'The lossless image is on screen.',
  'rd.q.saver': 'Data saver',
});
registerStrings('vi', {
  'rd.q.preview': 'Xem trước',
  'rd.q.full': 'Chất lượng đầy đủ',
  'rd.q.previewTitle': 'Đang hiển thị ảnh xem trước (nén có mất dữ liệu); ảnh gốc sẽ thay thế. Bấm để tải ngay.',
  'rd.q.fullTitle': 'Đang hiển thị ảnh gốc (không mất dữ liệu).',
  'rd.q.saver': 'Tiết kiệm dữ liệu',
});

export function dataSaver(): boolean {
  try {
    return localStorage.getItem(DATA_SAVER_KEY) === '1';
  } catch {
    return false;
  }
}

export function setDataSaver(on: boolean): void {
  try {
    if (on) localStorage.setItem(DATA_SAVER_KEY, '1');
    else localStorage.removeItem(DATA_SAVER_KEY);
  } catch {
    // Storage refused (private mode): the setting lasts for this page only.
  }
  saverOverride = on;
  mode = undefined;
  pump();
}

let saverOverride: boolean | undefined;
let mode: QualityMode | undefined;

/** Bytes a response must have for its timing to say something about the link. */
const MEASURABLE_BYTES = 32 * 1024;

/** The link's throughput (Mbit/s) as seen by the largest response this page
 * received over the network (Resource Timing; on a cold start the reader's
 * own chunk), if there is one. The browser's `navigator.connection` is no
 * help: it reports about 1.6 Mbit/s on localhost with no estimate yet. */
function measuredDownlinkMbps(): number | undefined {
  let best: PerformanceResourceTiming | undefined;
  for (const e of performance.getEntriesByType('resource') as PerformanceResourceTiming[]) {
    if (e.transferSize === 0 || e.encodedBodySize < MEASURABLE_BYTES || !(e.responseEnd > e.responseStart)) continue;
    if (!best || e.encodedBodySize > best.encodedBodySize) best = e;
  }
  if (!best) return undefined;
  return (best.encodedBodySize * 8) / ((best.responseEnd - best.responseStart) * 1000);
}

/** The loading mode, decided once per page from the setting and the link. */
export function qualityMode(): QualityMode {
  if (mode) return mode;
  const conn = (navigator as Navigator & { connection?: { saveData?: boolean } }).connection;
  let forced: string | null = null;
  try {
    forced = localStorage.getItem(QUALITY_KEY);
  } catch {
    forced = null;
  }
  const mbps = measuredDownlinkMbps();
  if (saverOverride ?? dataSaver()) mode = 'saver';
  else if (forced === 'full' || forced === 'progressive') mode = forced;
  else if (conn?.saveData) mode = 'saver';
  else if (mbps !== undefined && mbps < SLOW_DOWNLINK_MBPS) mode = 'progressive';
  else mode = 'full';
  linkMbps = mbps;
  return mode;
}

let linkMbps: number | undefined;

const previews = new WeakSet<object>();

/** True for an image that is a lossy preview. */
export function isPreview(image: unknown): boolean {
  return typeof image === 'object' && image !== null && previews.has(image);
}

interface Pending {
  promise: Promise<Types.IImage>;
  resolve: (i: Types.IImage) => void;
  reject: (e: unknown) => void;
}

interface SeriesState {
  window: { c: number; w: number } | undefined;
  /** Preview per image id (frame 1 of each instance), resolved as the stream delivers them. */
  pending: Map<string, Pending>;
  /** Image ids whose lossless frame is in the cache (or on its way). */
  full: Set<string>;
  previewsDone: boolean;
}

const states = new Map<SeriesInfo, SeriesState>();
let originalLoader: ((id: string, o?: Record<string, unknown>) => Types.IImageLoadObject) | undefined;
const stats = { previews: 0, full: 0, previewBytes: 0 };

/** The window a preview of `series` is rendered with, if it can have one. */
function previewWindow(series: SeriesInfo): { c: number; w: number } | undefined {
  const ds: DicomJson | undefined = series.frames[0]?.instance;
  if (!ds || series.multiFrame) return undefined;
  if ((num(ds, '00280002') ?? 1) !== 1 || str(ds, '00280004').trim() !== 'MONOCHROME2') return undefined;
  const fn = str(ds, '00281056').trim();
  if (fn && fn !== 'LINEAR') return undefined;
  const c = num(ds, '00281050');
  const w = num(ds, '00281051');
  return c !== undefined && w !== undefined && w >= 1 ? { c, w } : undefined;
}

function stateOf(series: SeriesInfo): SeriesState {
  let s = states.get(series);
  if (!s) {
    s = { window: previewWindow(series), pending: new Map(), full: new Set(), previewsDone: false };
    states.set(series, s);
    if (s.window) {
      for (const [i, id] of series.imageIds.entries()) {
        if (series.frames[i]?.frame !== 1) continue;
        let resolve!: (i: Types.IImage) => void;
        let reject!: (e: unknown) => void;
        const promise = new Promise<Types.IImage>((res, rej) => {
          resolve = res;
          reject = rej;
        });
        promise.catch(() => undefined);
        s.pending.set(id, { promise, resolve, reject });
      }
      void streamPreviews(series, s);
    }
  }
  return s;
}

/** Installs the wrapper around the `wadors:` image loader (once, after the loader's own init). */
export function installProgressive(): void {
  if (originalLoader) return;
  originalLoader = wadors.loadImage as unknown as typeof originalLoader;
  imageLoader.registerImageLoader('wadors', ((imageId: string, options?: Record<string, unknown>) => {
    const load = originalLoader as NonNullable<typeof originalLoader>;
    const series = seriesOfImageId(imageId);
    // Volumes (a target buffer) and fast links always get the lossless frame.
    if (!series || options?.targetBuffer || qualityMode() === 'full') return load(imageId, options);
    const st = stateOf(series);
    const p = st.pending.get(imageId);
    if (!p || st.full.has(imageId)) return load(imageId, options);
    return { promise: p.promise.catch(() => load(imageId, options).promise) };
  }) as unknown as Types.ImageLoaderFn);
  (window as unknown as { senQuality?: unknown }).senQuality = {
    get mode() {
      return qualityMode();
    },
    get stats() {
      return { ...stats };
    },
    get linkMbps() {
      return linkMbps;
    },
    setDataSaver,
    /** Sum of the first viewport's pixel values (tests: which image is on screen). */
    pixelSum() {
      const image = shown()[0]?.vp.getCornerstoneImage();
      const data = image?.getPixelData() as ArrayLike<number> | undefined;
      let sum = 0;
      for (let i = 0; i < (data?.length ?? 0); i++) sum += (data as ArrayLike<number>)[i];
      return sum;
    },
  };
}

/** Reads one `multipart/related` stream of rendered previews for the series. */
async function streamPreviews(series: SeriesInfo, st: SeriesState): Promise<void> {
  const win = st.window as { c: number; w: number };
  const url =
    `/dicom-web/studies/${encodeURIComponent(series.study.uid)}/series/${encodeURIComponent(series.uid)}/rendered` +
    `?window=${win.c},${win.w},linear&viewport=${PREVIEW_SIDE},${PREVIEW_SIDE}&quality=${PREVIEW_QUALITY}`;
  const bySop = new Map<string, string>();
  for (const [i, id] of series.imageIds.entries()) {
    if (series.frames[i]?.frame === 1) bySop.set(str(series.frames[i].instance, '00080018'), id);
  }
  const work: Promise<void>[] = [];
  try {
    const r = await fetch(url, { headers: { Accept: 'multipart/related; type="image/jpeg"' } });
    const boundary = /boundary="?([^";]+)"?/i.exec(r.headers.get('Content-Type') ?? '')?.[1];
    if (!r.ok || !r.body || !boundary) throw new Error(`previews: ${r.status}`);
    for await (const part of multipartParts(r.body, boundary)) {
      const sop = /\/instances\/([^/?]+)/.exec(part.location ?? '')?.[1];
      const id = sop ? bySop.get(decodeURIComponent(sop)) : undefined;
      const p = id ? st.pending.get(id) : undefined;
      if (!id || !p) continue;
      stats.previewBytes += part.body.byteLength;
      work.push(previewImage(id, part.body, win).then((img) => {
        stats.previews += 1;
        p.resolve(img);
      }, p.reject));
    }
  } catch (e) {
    console.warn('previews unavailable, loading lossless frames', e);
  } finally {
    await Promise.allSettled(work);
    // Anything the stream did not deliver loads lossless.
    for (const p of st.pending.values()) p.reject(new Error('no preview'));
    st.previewsDone = true;
    performance.mark('sen:previews-done', { detail: { series: series.uid, previews: stats.previews } });
    pump();
  }
}

interface Part {
  location: string | undefined;
  body: Uint8Array;
}

function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = Math.max(0, from); i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** The parts of a `multipart/related` body (RFC 2046 5.1) as they arrive. */
async function* multipartParts(body: ReadableStream<Uint8Array>, boundary: string): AsyncGenerator<Part> {
  const enc = new TextEncoder();
  const delim = enc.encode(`\r\n--${boundary}`);
  const reader = body.getReader();
  // A leading CRLF lets the first delimiter match like the others.
  let buf: Uint8Array = enc.encode('\r\n');
  let start = -1;
  for (;;) {
    const { done, value } = await reader.read();
    if (value) {
      const next = new Uint8Array(buf.length + value.length);
      next.set(buf);
      next.set(value, buf.length);
      buf = next;
    }
    for (;;) {
      if (start < 0) {
        const d = indexOf(buf, delim, 0);
        if (d < 0) break;
        start = d + delim.length;
      }
      const end = indexOf(buf, delim, start);
      if (end < 0) break;
      const part = buf.subarray(start, end);
      const headEnd = indexOf(part, enc.encode('\r\n\r\n'), 0);
      if (headEnd >= 0) {
        const head = new TextDecoder().decode(part.subarray(0, headEnd));
        const location = /^content-location:\s*(.+)$/im.exec(head)?.[1]?.trim();
        yield { location, body: part.slice(headEnd + 4) };
      }
      buf = buf.slice(end);
      start = -1;
    }
    if (done) return;
  }
}

/** A Cornerstone image in modality units from a preview rendered through `win`, at the frame's size. */
async function previewImage(imageId: string, jpeg: Uint8Array, win: { c: number; w: number }): Promise<Types.IImage> {
  const plane = metaData.get('imagePlaneModule', imageId) as {
    rows: number; columns: number; rowPixelSpacing?: number; columnPixelSpacing?: number; frameOfReferenceUID?: string;
  };
  const rows = plane.rows;
  const cols = plane.columns;
  const bitmap = await createImageBitmap(new Blob([jpeg as BlobPart], { type: 'image/jpeg' }));
  const canvas = new OffscreenCanvas(cols, rows);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('no 2d context');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, 0, 0, cols, rows);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, cols, rows).data;
  // The inverse of the LINEAR window (PS3.3 C.11.2.1.2.1) from 0..255.
  const lower = win.c - 0.5 - (win.w - 1) / 2;
  const span = win.w - 1;
  const integral = Number.isInteger(lower) && Number.isInteger(span) && lower >= -32768 && lower + span <= 32767;
  const scalarData = integral ? new Int16Array(rows * cols) : new Float32Array(rows * cols);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < scalarData.length; i++) {
    const v = lower + (rgba[i * 4] / 255) * span;
    scalarData[i] = integral ? Math.round(v) : v;
    const s = scalarData[i];
    if (s < min) min = s;
    if (s > max) max = s;
  }
  const voxelManager = utilities.VoxelManager.createImageVoxelManager({
    width: cols,
    height: rows,
    numberOfComponents: 1,
    scalarData,
  });
  const image = {
    imageId,
    rows,
    columns: cols,
    height: rows,
    width: cols,
    color: false,
    rgba: false,
    numberOfComponents: 1,
    photometricInterpretation: 'MONOCHROME2',
    slope: 1,
    intercept: 0,
    windowCenter: win.c,
    windowWidth: win.w,
    minPixelValue: min,
    maxPixelValue: max,
    columnPixelSpacing: plane.columnPixelSpacing,
    rowPixelSpacing: plane.rowPixelSpacing,
    FrameOfReferenceUID: plane.frameOfReferenceUID,
    invert: false,
    getPixelData: () => voxelManager.getScalarData(),
    getCanvas: undefined,
    voxelManager,
    sizeInBytes: scalarData.byteLength,
    dataType: integral ? 'Int16Array' : 'Float32Array',
    isPreScaled: true,
    preScale: { enabled: true, scaled: true, scalingParameters: { rescaleSlope: 1, rescaleIntercept: 0 } },
    imageQualityStatus: Enums.ImageQualityStatus.LOSSY,
  } as unknown as Types.IImage;
  previews.add(image);
  return image;
}

// ---- the lossless pass -------------------------------------------------

let inFlight = 0;
let pumpQueued = false;
const asked = new Set<string>();
let dwell: { id: string; timer: number } | undefined;

/** Stack viewports and their current image ids. */
function shown(): { vp: Types.IStackViewport; id: string }[] {
  const out: { vp: Types.IStackViewport; id: string }[] = [];
  for (const engine of getRenderingEngines() ?? []) {
    for (const vp of engine.getViewports()) {
      const stack = vp as Types.IStackViewport;
      if (typeof stack.getCurrentImageId !== 'function' || typeof stack.getImageIds !== 'function') continue;
      const id = stack.getCurrentImageId();
      if (id) out.push({ vp: stack, id });
    }
  }
  return out;
}

/** Loads the lossless frame of the image on screen in `element`'s viewport now. */
export function askFull(imageId: string): void {
  asked.add(imageId);
  pump();
}

/** The next image id to make lossless: a slice on screen first, then outwards from it. */
function nextFull(): string | undefined {
  const views = shown();
  const saver = qualityMode() === 'saver';
  const wanted = (id: string) => {
    const s = seriesOfImageId(id);
    if (!s) return false;
    const st = states.get(s);
    return !!st && !st.full.has(id) && (st.pending.has(id) || cache.getImageQuality(id) === Enums.ImageQualityStatus.LOSSY);
  };
  for (const id of asked) {
    asked.delete(id);
    if (wanted(id)) return id;
  }
  if (saver) {
    // Only the slice the reader has stopped on.
    const current = views.map((v) => v.id).find(wanted);
    if (current && dwell?.id !== current) {
      if (dwell) clearTimeout(dwell.timer);
      dwell = { id: current, timer: window.setTimeout(() => askFull(current), SAVER_DWELL_MS) };
    }
    return undefined;
  }
  // After the previews: the slices on screen, then outwards from them.
  for (const { id } of views) {
    const s = seriesOfImageId(id);
    if (s && states.get(s)?.previewsDone && wanted(id)) return id;
  }
  for (const { vp, id } of views) {
    const s = seriesOfImageId(id);
    if (!s || !states.get(s)?.previewsDone) continue;
    const ids = vp.getImageIds();
    const at = ids.indexOf(id);
    for (let d = 0; d < ids.length; d++) {
      for (const i of [at + d, at - d]) if (i >= 0 && i < ids.length && wanted(ids[i])) return ids[i];
    }
  }
  return undefined;
}

/** Starts lossless loads while there is room. */
export function pump(): void {
  if (pumpQueued || !originalLoader) return;
  pumpQueued = true;
  queueMicrotask(() => {
    pumpQueued = false;
    while (inFlight < FULL_CONCURRENCY) {
      const id = nextFull();
      if (!id) return;
      void loadFull(id);
    }
  });
}

async function loadFull(imageId: string): Promise<void> {
  const series = seriesOfImageId(imageId);
  const st = series && states.get(series);
  if (!st || !originalLoader) return;
  st.full.add(imageId);
  inFlight += 1;
  try {
    const image = await originalLoader(imageId, {
      priority: 0,
      requestType: Enums.RequestType.Prefetch,
      additionalDetails: { imageId },
    }).promise;
    // A preview (or its pending load) gives way to the lossless image.
    if (cache.getImageLoadObject(imageId)) cache.removeImageLoadObject(imageId, { force: true });
    await cache.putImageLoadObject(imageId, { promise: Promise.resolve(image) } as Types.IImageLoadObject);
    stats.full += 1;
    for (const { vp, id } of shown()) {
      if (id !== imageId) continue;
      const stack = vp as unknown as { successCallback?: (id: string, image: Types.IImage) => void };
      stack.successCallback?.(imageId, image);
    }
  } catch (e) {
    st.full.delete(imageId);
    console.warn('lossless frame failed', imageId, e);
  } finally {
    inFlight -= 1;
    pump();
  }
}

// ---- the indicator -----------------------------------------------------

/** A badge in `root` saying which quality `element`'s viewport shows; a
 * click on "preview" loads the lossless image of that slice now. */
export function qualityBadge(root: HTMLElement, element: HTMLElement, viewport: () => Types.IStackViewport | undefined): void {
  const badge = document.createElement('button');
  badge.type = 'button';
  badge.className = 'rd-quality';
  badge.hidden = true;
  root.append(badge);
  const update = () => {
    const vp = viewport();
    const image = vp?.getCornerstoneImage?.();
    const q = !image ? '' : isPreview(image) ? 'preview' : 'full';
    root.dataset.quality = q;
    root.dataset.qualityImage = image?.imageId ?? '';
    // The badge shows only where previews are in play.
    const series = image ? seriesOfImageId(image.imageId) : undefined;
    badge.hidden = !q || !series || !states.get(series)?.window || qualityMode() === 'full';
    const text = q === 'preview' ? t('rd.q.preview') : t('rd.q.full');
    if (badge.textContent !== text) badge.textContent = text;
    badge.dataset.quality = q;
    badge.title = q === 'preview' ? t('rd.q.previewTitle') : t('rd.q.fullTitle');
  };
  badge.onclick = () => {
    const id = viewport()?.getCurrentImageId();
    if (id) askFull(id);
  };
  element.addEventListener(Enums.Events.IMAGE_RENDERED, update);
  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
    update();
    pump();
  });
}

/** The toolbar's data-saver switch (kept in localStorage). */
export function saverToggle(): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'rd-btn rd-saver';
  b.dataset.t = 'rd.q.saver';
  const sync = () => {
    const on = dataSaver();
    b.textContent = t('rd.q.saver');
    b.title = t('rd.q.saver');
    b.classList.toggle('rd-on', on);
    b.setAttribute('aria-pressed', String(on));
  };
  b.onclick = () => {
    setDataSaver(!dataSaver());
    sync();
  };
  sync();
  return b;
}
