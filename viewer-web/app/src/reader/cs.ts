// Cornerstone3D set-up shared by every viewport of the reading view: the
// core, the DICOMweb image loader with its codec workers, the tools and one
// tool group with our mouse and touch bindings.

import {
  Enums,
  eventTarget,
  imageLoadPoolManager,
  imageLoader,
  init as csInit,
  RenderingEngine,
} from '@cornerstonejs/core';
import { init as dicomImageLoaderInit } from '@cornerstonejs/dicom-image-loader';
import {
  addTool,
  AngleTool,
  EllipticalROITool,
  Enums as ToolEnums,
  init as toolsInit,
  LengthTool,
  PanTool,
  RectangleROITool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  type Types as ToolTypes,
} from '@cornerstonejs/tools';
import { seriesOfImageId } from './study';
import { installProgressive } from './progressive';

export const ENGINE_ID = 'sen-reader';
export const TOOL_GROUP_ID = 'sen-reader-tools';

export type ToolKey = 'wl' | 'pan' | 'zoom' | 'scroll' | 'length' | 'angle' | 'rect' | 'ellipse';

export const TOOL_NAMES: Record<ToolKey, string> = {
  wl: WindowLevelTool.toolName,
  pan: PanTool.toolName,
  zoom: ZoomTool.toolName,
  scroll: StackScrollTool.toolName,
  length: LengthTool.toolName,
  angle: AngleTool.toolName,
  rect: RectangleROITool.toolName,
  ellipse: EllipticalROITool.toolName,
};

export const MEASUREMENT_TOOLS = new Set<string>([
  LengthTool.toolName,
  AngleTool.toolName,
  RectangleROITool.toolName,
  EllipticalROITool.toolName,
]);

let ready: Promise<void> | undefined;
const loadListeners = new Set<(imageId: string) => void>();

/** Called for every image that arrives in the cache (load progress). */
export function onImageLoaded(f: (imageId: string) => void): () => void {
  loadListeners.add(f);
  return () => loadListeners.delete(f);
}

export function ensureCornerstone(): Promise<void> {
  ready ??= (async () => {
    await csInit();
    const workers = Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1));
    dicomImageLoaderInit({ maxWebWorkers: workers });
    installProgressive();
    toolsInit();
    for (const tool of [
      WindowLevelTool,
      PanTool,
      ZoomTool,
      StackScrollTool,
      LengthTool,
      AngleTool,
      RectangleROITool,
      EllipticalROITool,
    ]) {
      addTool(tool);
    }
    eventTarget.addEventListener(Enums.Events.IMAGE_LOADED, ((e: CustomEvent) => {
      const id = (e.detail as { image?: { imageId?: string } }).image?.imageId;
      if (!id) return;
      seriesOfImageId(id)?.loaded.add(id);
      loadListeners.forEach((f) => f(id));
    }) as EventListener);
  })();
  return ready;
}

let engine: RenderingEngine | undefined;

export function getEngine(): RenderingEngine {
  if (!engine || engine.hasBeenDestroyed) engine = new RenderingEngine(ENGINE_ID);
  return engine;
}

export function destroyEngine(): void {
  ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
  engine?.destroy();
  engine = undefined;
}

const { MouseBindings } = ToolEnums;

/** The tool group with fixed bindings: wheel scrolls, right button zooms,
 * middle button pans, two fingers pinch-zoom and pan; the primary button
 * (and one finger) is the user's current tool. */
export function createToolGroup(): ToolTypes.IToolGroup {
  ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
  const g = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  if (!g) throw new Error('tool group');
  for (const name of Object.values(TOOL_NAMES)) g.addTool(name);
  g.setToolConfiguration(ZoomTool.toolName, { pinchToZoom: true, pan: true, minZoomScale: 0.05, maxZoomScale: 40 });
  g.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  g.setToolActive(ZoomTool.toolName, {
    bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }],
  });
  g.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  for (const name of MEASUREMENT_TOOLS) g.setToolPassive(name);
  return g;
}

/** Makes `tool` the primary-button / one-finger tool. */
export function setPrimaryTool(g: ToolTypes.IToolGroup, tool: string): void {
  const prev = g.getActivePrimaryMouseButtonTool();
  if (prev && prev !== tool) g.setToolPassive(prev);
  g.setToolActive(tool, { bindings: [{ mouseButton: MouseBindings.Primary }] });
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
