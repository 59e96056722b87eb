// The reading view's tools (Cornerstone3D tools: mouse and touch bindings,
// measurements, annotation state), a chunk of its own: about 0.9 MB of script
// with the contour library it brings, which the first image does not need.
// The reader loads it once its first image is drawn (index.ts `loadTools`),
// and before anything that uses tools (derived objects, MPR).

import { getEnabledElements } from '@cornerstonejs/core';
import {
  addTool,
  AngleTool,
  annotation,
  EllipticalROITool,
  Enums as ToolEnums,
  init as toolsInit,
  LengthTool,
  PanTool,
  RectangleROITool,
  StackScrollTool,
  store,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  type Types as ToolTypes,
} from '@cornerstonejs/tools';
import { MEASUREMENT_TOOLS, TOOL_NAMES } from './cs';

export const TOOL_GROUP_ID = 'sen-reader-tools';

const CLASSES = [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, AngleTool, RectangleROITool, EllipticalROITool];

let initialised = false;

/** Initialises the tools once. Viewports enabled before (the first image's)
 * are given the tools' listeners and annotation layer now, as the tools do
 * for every viewport enabled later. */
export function initTools(): void {
  if (initialised) return;
  initialised = true;
  const known = new Set<string>(Object.values(TOOL_NAMES));
  for (const c of CLASSES) {
    if (!known.has(c.toolName)) throw new Error(`tool name ${c.toolName} is not in TOOL_NAMES`);
  }
  toolsInit();
  for (const c of CLASSES) addTool(c);
  for (const e of getEnabledElements()) {
    const { viewport, renderingEngineId } = e;
    store.addEnabledElement(
      new CustomEvent('sen-enabled', { detail: { element: viewport.element, viewportId: viewport.id, renderingEngineId } }) as never,
    );
  }
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

export function destroyToolGroup(): void {
  ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
}

/** Makes `tool` the primary-button / one-finger tool. */
export function setPrimaryTool(g: ToolTypes.IToolGroup, tool: string): void {
  const prev = g.getActivePrimaryMouseButtonTool();
  if (prev && prev !== tool) g.setToolPassive(prev);
  g.setToolActive(tool, { bindings: [{ mouseButton: MouseBindings.Primary }] });
}

export { annotation };
export type ToolGroup = ToolTypes.IToolGroup;
