// Cornerstone3D set-up shared by every viewport of the reading view: the
// core and the DICOMweb image loader with its codec workers. The tools (mouse
// and touch bindings, measurements) are not on the first image's path: they
// are a chunk of their own, ./tools.ts, loaded once the first image is drawn.

import {
  Enums,
  eventTarget,
  imageLoadPoolManager,
  imageLoader,
  getRenderingCapabilities,
  RenderingEngine,
  setUseCPURendering,
} from '@cornerstonejs/core';
import { init as dicomImageLoaderInit } from '@cornerstonejs/dicom-image-loader';
import { seriesOfImageId } from './study';
import { installProgressive } from './progressive';

export const ENGINE_ID = 'sen-reader';

export type ToolKey = 'wl' | 'pan' | 'zoom' | 'scroll' | 'length' | 'angle' | 'rect' | 'ellipse';

/** The tools' names (their `toolName`, checked against the classes in ./tools.ts). */
export const TOOL_NAMES = {
  wl: 'WindowLevel',
  pan: 'Pan',
  zoom: 'Zoom',
  scroll: 'StackScroll',
  length: 'Length',
  angle: 'Angle',
  rect: 'RectangleROI',
  ellipse: 'EllipticalROI',
} as const satisfies Record<ToolKey, string>;

export const MEASUREMENT_TOOLS = new Set<string>([TOOL_NAMES.length, TOOL_NAMES.angle, TOOL_NAMES.rect, TOOL_NAMES.ellipse]);

let ready: Promise<void> | undefined;
const loadListeners = new Set<(imageId: string) => void>();

/** Called for every image that arrives in the cache (load progress). */
export function onImageLoaded(f: (imageId: string) => void): () => void {
  loadListeners.add(f);
  return () => loadListeners.delete(f);
}

/** Initialises Cornerstone for the first image: its CPU (canvas 2D) drawing
 * pipeline, which needs no WebGL context. Cornerstone's own `init` probes
 * WebGL (a context and its texture formats) and a GPU rendering engine
 * opens a pool of WebGL contexts: hundreds of milliseconds of the page's
 * only thread before the first image with a software rasteriser, tens with
 * a GPU. The reader moves to the GPU pipeline after its first image
 * (`useGpu`, index.ts `toGpu`). */
export function ensureCornerstone(): Promise<void> {
  ready ??= (async () => {
    setUseCPURendering(true, false);
    const workers = Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1));
    dicomImageLoaderInit({ maxWebWorkers: workers });
    installProgressive();
    eventTarget.addEventListener(Enums.Events.IMAGE_LOADED, ((e: CustomEvent) => {
      const id = (e.detail as { image?: { imageId?: string } }).image?.imageId;
      if (!id) return;
      seriesOfImageId(id)?.loaded.add(id);
      loadListeners.forEach((f) => f(id));
    }) as EventListener);
  })();
  return ready;
}

/** Switches new rendering engines and viewports to the GPU (WebGL)
 * pipeline, as Cornerstone's `init` would have chosen; false, and the CPU
 * pipeline stays, where the browser has no WebGL. */
export function useGpu(): boolean {
  if (!getRenderingCapabilities().webgl) return false;
  setUseCPURendering(false, false);
  return true;
}

let engine: RenderingEngine | undefined;

export function getEngine(): RenderingEngine {
  if (!engine || engine.hasBeenDestroyed) engine = new RenderingEngine(ENGINE_ID);
  return engine;
}

export function destroyEngine(): void {
  engine?.destroy();
  engine = undefined;
}

/** Queues the loading of `ids` in the order given (earlier = sooner), as
 * prefetch requests behind anything the user is looking at. */
export function prefetch(ids: string[], basePriority = 0): void {
  ids.forEach((id, i) => {
    const series = seriesOfImageId(id);
    if (series?.loaded.has(id)) return;
    // Requests of one priority are served first in, first out: a few
    // priority groups (1, 2-3, 4-7, … away from the start) keep the order
    // without making the pool sort hundreds of groups on every request.
    const priority = basePriority + Math.floor(Math.log2(i + 1));
    imageLoadPoolManager.addRequest(
      () =>
        imageLoader
          .loadAndCacheImage(id, { priority, requestType: Enums.RequestType.Prefetch })
          .then(() => undefined, () => undefined),
      Enums.RequestType.Prefetch,
      { imageId: id },
      priority,
    );
  });
}

/** Loads `id` into the cache now, at the priority of what is on screen. */
export function loadImage(id: string): void {
  imageLoader
    .loadAndCacheImage(id, { priority: -5, requestType: Enums.RequestType.Interaction })
    .catch(() => undefined);
}

/** `ids` reordered from `index` outwards: index, index+1, index-1, index+2, … */
export function outward<T>(ids: T[], index: number): T[] {
  const out: T[] = [];
  for (let d = 0; out.length < ids.length; d++) {
    if (index + d < ids.length && index + d >= 0) out.push(ids[index + d]);
    if (d > 0 && index - d >= 0 && index - d < ids.length) out.push(ids[index - d]);
    if (index + d >= ids.length && index - d < 0) break;
  }
  return out;
}
