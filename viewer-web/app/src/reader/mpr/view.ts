// The MPR view: axial, sagittal and coronal volume viewports of one series
// with linked crosshairs, a slab thickness and maximum intensity projection.
// Loaded on demand (dynamic import) so that the stack viewer does not pay for
// it. A series that does not form a volume (`checkVolume`) is refused with
// the reason and nothing is drawn.

import './mpr.css';
import './strings';
import {
  cache,
  Enums,
  RenderingEngine,
  setVolumesForViewports,
  type Types,
  utilities,
  volumeLoader,
} from '@cornerstonejs/core';
import {
  addTool,
  CrosshairsTool,
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
} from '@cornerstonejs/tools';
import { num } from '../../dicomweb';
import { onLangChange, t } from '../../i18n';
import type { SeriesInfo } from '../study';
import { checkVolume, frameGeometry, type VolumeCheck } from './geometry';

const ENGINE_ID = 'sen-mpr';
const TOOL_GROUP_ID = 'sen-mpr-tools';
const PLANES = ['axial', 'sagittal', 'coronal'] as const;
type Plane = (typeof PLANES)[number];
const ORIENTATION: Record<Plane, Enums.OrientationAxis> = {
  axial: Enums.OrientationAxis.AXIAL,
  sagittal: Enums.OrientationAxis.SAGITTAL,
  coronal: Enums.OrientationAxis.CORONAL,
};
/** Thickest slab offered (mm). */
const MAX_SLAB_MM = 500;

let toolsAdded = false;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Why a check refused, in the user's language. */
export function refusalText(c: VolumeCheck): string {
  return c.ok ? '' : t(`mpr.reason.${c.reason}`, c.detail);
}

export interface MprView {
  close(): void;
}

/** Shows the MPR of `series` in place of `grid` (inserted after it);
 * `onClose` runs when the user closes it. */
export function openMpr(grid: HTMLElement, series: SeriesInfo, onClose: () => void): MprView {
  const view = new Mpr(grid, series, onClose);
  void view.start();
  return view;
}

class Mpr implements MprView {
  private readonly root = el('section', 'mpr');
  private readonly bar = el('div', 'mpr-bar');
  private readonly body = el('div', 'mpr-body');
  private readonly status = el('div', 'mpr-status');
  private readonly slabInput = el('input', 'mpr-slab');
  private readonly mipBtn = el('button', 'rd-btn mpr-mip');
  private readonly elements = new Map<Plane, HTMLDivElement>();
  private readonly cleanups: (() => void)[] = [];
  private engine: RenderingEngine | undefined;
  private readonly volumeId: string;
  private check: VolumeCheck | undefined;
  private mip = false;
  private closed = false;
  private state: 'checking' | 'refused' | 'loading' | 'ready' | 'error' = 'checking';

  constructor(private readonly grid: HTMLElement, private readonly series: SeriesInfo, private readonly onClose: () => void) {
    this.volumeId = `cornerstoneStreamingImageVolume:sen-mpr-${series.uid}`;
  }

  async start(): Promise<void> {
    this.buildDom();
    this.installTestApi();
    const s = this.series;
    const frames = s.frames.map((f) => frameGeometry(f.instance as never, f.frame));
    const check = checkVolume(s.modality, frames);
    this.check = check;
    this.root.dataset.seriesUid = s.uid;
    if (!check.ok) {
      this.state = 'refused';
      this.root.dataset.state = 'refused';
      const box = el('div', 'mpr-refused');
      box.dataset.reason = check.reason;
      box.append(el('strong', undefined, t('mpr.refused')), el('p', 'mpr-reason', refusalText(check)));
      this.body.replaceChildren(box);
      this.slabInput.disabled = true;
      this.mipBtn.disabled = true;
      this.cleanups.push(onLangChange(() => {
        box.replaceChildren(el('strong', undefined, t('mpr.refused')), el('p', 'mpr-reason', refusalText(check)));
      }));
      return;
    }
    this.state = 'loading';
    this.root.dataset.state = 'loading';
    try {
      await this.load(check.order.map((i) => s.imageIds[i]));
    } catch (e) {
      if (this.closed) return;
      console.warn(e);
      this.state = 'error';
      this.root.dataset.state = 'error';
      this.showStatus(t('mpr.error', { msg: e instanceof Error ? e.message : String(e) }));
    }
  }

  private buildDom(): void {
    const title = el('strong', 'mpr-title', t('mpr.title'));
    this.slabInput.type = 'number';
    this.slabInput.min = '0';
    this.slabInput.max = String(MAX_SLAB_MM);
    this.slabInput.step = '1';
    this.slabInput.value = '0';
    this.slabInput.title = t('mpr.slab');
    this.slabInput.onchange = () => this.applySlab();
    const slab = el('label', 'mpr-slab-label');
    slab.append(el('span', undefined, t('mpr.slab')), this.slabInput);
    this.mipBtn.type = 'button';
    this.mipBtn.dataset.action = 'mip';
    this.mipBtn.textContent = t('mpr.mip');
    this.mipBtn.title = t('mpr.mipTitle');
    this.mipBtn.setAttribute('aria-pressed', 'false');
    this.mipBtn.onclick = () => {
      this.mip = !this.mip;
      this.mipBtn.classList.toggle('rd-on', this.mip);
      this.mipBtn.setAttribute('aria-pressed', String(this.mip));
      this.applySlab();
    };
    const close = el('button', 'rd-btn mpr-close', '×');
    close.type = 'button';
    close.dataset.action = 'mpr-close';
    close.title = t('mpr.close');
    close.setAttribute('aria-label', t('mpr.close'));
    close.onclick = () => this.close();
    this.bar.append(title, el('span', 'mpr-desc', `${this.series.number ?? ''} ${this.series.description}`.trim()), slab, this.mipBtn, close);
    this.status.hidden = true;
    this.root.append(this.bar, this.body, this.status);
    this.grid.style.display = 'none';
    this.grid.after(this.root);
  }

  private showStatus(msg: string): void {
    this.status.textContent = msg;
    this.status.hidden = !msg;
  }

  private async load(imageIds: string[]): Promise<void> {
    for (const plane of PLANES) {
      const cell = el('div', 'mpr-cell');
      cell.dataset.plane = plane;
      const e = el('div', 'mpr-vp') as HTMLDivElement;
      e.oncontextmenu = (ev) => ev.preventDefault();
      cell.append(e, el('div', 'mpr-label', t(`mpr.${plane}`)));
      this.body.append(cell);
      this.elements.set(plane, e);
    }
    const engine = new RenderingEngine(ENGINE_ID);
    this.engine = engine;
    engine.setViewports(
      PLANES.map((plane) => ({
        viewportId: `${ENGINE_ID}-${plane}`,
        type: Enums.ViewportType.ORTHOGRAPHIC,
        element: this.elements.get(plane) as HTMLDivElement,
        defaultOptions: { orientation: ORIENTATION[plane], background: [0, 0, 0] as Types.Point3 },
      })),
    );
    this.setUpTools();
    const volume = await volumeLoader.createAndCacheVolume(this.volumeId, { imageIds });
    if (this.closed) return;
    const total = imageIds.length;
    const progress = () => {
      const v = cache.getVolume(this.volumeId) as unknown as { loadStatus?: { loaded?: boolean } } | undefined;
      const loaded = imageIds.filter((id) => this.series.loaded.has(id)).length;
      if (v?.loadStatus?.loaded) this.showStatus('');
      else this.showStatus(t('mpr.loading', { pct: Math.round((100 * loaded) / total) }));
    };
    progress();
    const onLoaded = () => progress();
    this.cleanups.push(() => clearInterval(timer));
    const timer = setInterval(onLoaded, 250);
    (volume as unknown as { load: (cb?: () => void) => void }).load(() => {
      clearInterval(timer);
      this.showStatus('');
      if (this.closed) return;
      this.root.dataset.state = 'ready';
      this.state = 'ready';
      this.engine?.render();
    });
    await setVolumesForViewports(engine, [{ volumeId: this.volumeId }], PLANES.map((p) => `${ENGINE_ID}-${p}`));
    if (this.closed) return;
    this.applyWindow();
    engine.render();
    const ro = new ResizeObserver(() => this.engine?.resize(true, true));
    ro.observe(this.body);
    this.cleanups.push(() => ro.disconnect());
  }

  private setUpTools(): void {
    if (!toolsAdded) {
      // The stack view's tools are added already; these are the MPR's own.
      addTool(CrosshairsTool);
      toolsAdded = true;
    }
    ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
    const g = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
    if (!g) return;
    const colors: Record<string, string> = {
      [`${ENGINE_ID}-axial`]: 'rgb(230, 80, 80)',
      [`${ENGINE_ID}-sagittal`]: 'rgb(240, 200, 60)',
      [`${ENGINE_ID}-coronal`]: 'rgb(80, 200, 120)',
    };
    // The crosshairs read these callbacks when they are created.
    g.addTool(CrosshairsTool.toolName, {
      getReferenceLineColor: (id: string) => colors[id] ?? 'rgb(200, 200, 200)',
      getReferenceLineControllable: () => true,
      getReferenceLineDraggableRotatable: () => true,
      getReferenceLineSlabThicknessControlsOn: () => false,
    });
    for (const name of [StackScrollTool.toolName, ZoomTool.toolName, PanTool.toolName, WindowLevelTool.toolName]) g.addTool(name);
    const { MouseBindings, KeyboardBindings } = ToolEnums;
    // Shift + primary button: window / level (the primary button alone moves the crosshairs).
    g.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Shift }] });
    g.setToolActive(CrosshairsTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }, { numTouchPoints: 1 }] });
    g.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    g.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }, { numTouchPoints: 2 }] });
    g.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    for (const plane of PLANES) g.addViewport(`${ENGINE_ID}-${plane}`, ENGINE_ID);
  }

  private viewport(plane: Plane): Types.IVolumeViewport | undefined {
    return this.engine?.getViewport(`${ENGINE_ID}-${plane}`) as Types.IVolumeViewport | undefined;
  }

  /** The window of the series' first image (CT soft tissue by default); the volume's range otherwise. */
  private applyWindow(): void {
    const ds = this.series.frames[0]?.instance;
    const w = num(ds, '00281051');
    const c = num(ds, '00281050');
    if (w === undefined || c === undefined) return;
    for (const plane of PLANES) {
      this.viewport(plane)?.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(w, c) }, this.volumeId);
    }
  }

  /** Slab thickness on every plane: MIP over it, or its average without MIP;
   * 0 mm is the plain slice. */
  private applySlab(): void {
    const mm = Math.max(0, Math.min(MAX_SLAB_MM, Number(this.slabInput.value) || 0));
    this.slabInput.value = String(mm);
    const { BlendModes } = Enums;
    for (const plane of PLANES) {
      const vp = this.viewport(plane);
      if (!vp) continue;
      if (this.mip) {
        vp.setBlendMode(BlendModes.MAXIMUM_INTENSITY_BLEND);
        if (mm > 0) vp.setSlabThickness(mm);
        else vp.resetSlabThickness();
      } else if (mm > 0) {
        vp.setBlendMode(BlendModes.AVERAGE_INTENSITY_BLEND);
        vp.setSlabThickness(mm);
      } else {
        vp.setBlendMode(BlendModes.COMPOSITE);
        vp.resetSlabThickness();
      }
    }
    this.root.dataset.slab = String(mm);
    this.root.dataset.mip = String(this.mip);
    this.engine?.render();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cleanups.forEach((f) => f());
    ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
    this.engine?.destroy();
    this.engine = undefined;
    cache.removeVolumeLoadObject(this.volumeId);
    this.root.remove();
    this.grid.style.display = '';
    delete window.senMpr;
    this.onClose();
  }

  private crosshairs(): CrosshairsTool | undefined {
    return ToolGroupManager.getToolGroup(TOOL_GROUP_ID)?.getToolInstance(CrosshairsTool.toolName) as CrosshairsTool | undefined;
  }

  /** Test and automation API (`window.senMpr`). */
  private installTestApi(): void {
    const toClient = (plane: Plane, world: Types.Point3): [number, number] | undefined => {
      const vp = this.viewport(plane);
      const e = this.elements.get(plane);
      if (!vp || !e) return undefined;
      const [x, y] = vp.worldToCanvas(world);
      const r = e.getBoundingClientRect();
      return [r.left + x, r.top + y];
    };
    window.senMpr = {
      state: () => ({
        state: this.state,
        reason: this.check && !this.check.ok ? this.check.reason : undefined,
        message: this.check ? refusalText(this.check) : '',
        spacing: this.check?.ok ? this.check.spacing : undefined,
        center: this.crosshairs()?.toolCenter,
        slab: Number(this.root.dataset.slab ?? 0),
        mip: this.mip,
        planes: Object.fromEntries(
          PLANES.map((p) => {
            const cam = this.viewport(p)?.getCamera();
            return [p, { normal: cam?.viewPlaneNormal, focal: cam?.focalPoint, slab: this.viewport(p)?.getSlabThickness() }];
          }),
        ),
      }),
      /** Client (page) coordinates of a patient point in a plane's viewport. */
      worldToClient: (plane: Plane, world: Types.Point3) => toClient(plane, world),
      /** RGBA of the viewport's canvas where a patient point is drawn. */
      pixelAt: (plane: Plane, world: Types.Point3) => {
        const vp = this.viewport(plane);
        if (!vp) return undefined;
        const [x, y] = vp.worldToCanvas(world);
        const canvas = vp.canvas;
        const sx = canvas.width / (canvas.clientWidth || canvas.width);
        const ctx = canvas.getContext('2d');
        if (!ctx) return undefined;
        return Array.from(ctx.getImageData(Math.round(x * sx), Math.round(y * sx), 1, 1).data);
      },
      /** Moves the crosshairs' centre (the three planes) to a patient point. */
      setCenter: (world: Types.Point3) => {
        this.crosshairs()?.setToolCenter(world);
        this.engine?.render();
      },
    };
  }
}

declare global {
  interface Window {
    senMpr?: Record<string, unknown>;
  }
}
