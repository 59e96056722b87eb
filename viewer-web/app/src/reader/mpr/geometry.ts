// Whether the frames of a series form a volume that multi-planar
// reconstruction can draw without distortion. Pure (no DOM, no Cornerstone):
// `viewer-web/app/test/mpr-geometry.test.mjs` runs it under Node.
//
// A volume renderer places slice k at origin + k·spacing·normal, with the
// normal taken from Image Orientation (Patient). That is only true when every
// slice has the same orientation, size and pixel spacing, the slices are
// stacked along their own normal (no gantry tilt) and evenly spaced. Anything
// else would be drawn in the wrong place, so it is refused with the reason.
// Geometry per PS3.3 C.7.6.2 (Image Plane) and, for enhanced multi-frame
// objects, C.7.6.16.2.3 (Plane Position) and C.7.6.16.2.4 (Plane Orientation).

export type Vec3 = [number, number, number];

/** The geometry of one frame, as read from its data set. */
export interface FrameGeometry {
  /** Image Position (Patient) (0020,0032). */
  position?: number[];
  /** Image Orientation (Patient) (0020,0037). */
  orientation?: number[];
  rows?: number;
  columns?: number;
  /** Pixel Spacing (0028,0030): row spacing, column spacing. */
  pixelSpacing?: number[];
  /** Frame of Reference UID (0020,0052). */
  frameOfReference?: string;
  /** Set for a frame of a multi-frame object without per-frame geometry. */
  multiFrameWithoutGeometry?: boolean;
}

export type RefusalReason =
  | 'modality'
  | 'tooFew'
  | 'multiFrame'
  | 'noGeometry'
  | 'frameOfReference'
  | 'mixedSize'
  | 'mixedSpacing'
  | 'mixedOrientation'
  | 'duplicatePositions'
  | 'tilt'
  | 'irregularSpacing';

export type VolumeCheck =
  | {
      ok: true;
      /** Frame indices sorted along the slice normal (ascending). */
      order: number[];
      /** Distance between neighbouring slices (mm). */
      spacing: number;
      normal: Vec3;
    }
  | { ok: false; reason: RefusalReason; detail: Record<string, number | string> };

/** Fewest slices that make a volume. */
export const MIN_SLICES = 3;
/** Modalities offered MPR. */
export const VOLUME_MODALITIES = ['CT', 'MR'];
/** Largest difference between two orientation cosines still "the same orientation". */
const ORIENTATION_TOLERANCE = 1e-3;
/** Largest relative difference between two pixel spacings still "the same". */
const PIXEL_SPACING_TOLERANCE = 1e-3;

const dot = (a: Vec3, b: Vec3): number => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const sub = (a: Vec3, b: Vec3): Vec3 => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const cross = (a: Vec3, b: Vec3): Vec3 => [
  a[1] * b[2] - a[2] * b[1],
  a[2] * b[0] - a[0] * b[2],
  a[0] * b[1] - a[1] * b[0],
];
const norm = (a: Vec3): number => Math.hypot(a[0], a[1], a[2]);
const scale = (a: Vec3, s: number): Vec3 => [a[0] * s, a[1] * s, a[2] * s];
const round = (n: number, digits: number): number => Math.round(n * 10 ** digits) / 10 ** digits;

function finite(v: number[] | undefined, n: number): v is number[] {
  return Array.isArray(v) && v.length === n && v.every((x) => Number.isFinite(x));
}

/** Decides whether `frames` (one per image, in any order) form a volume. */
export function checkVolume(modality: string, frames: FrameGeometry[]): VolumeCheck {
  if (!VOLUME_MODALITIES.includes(modality)) return { ok: false, reason: 'modality', detail: { modality } };
  if (frames.some((f) => f.multiFrameWithoutGeometry)) return { ok: false, reason: 'multiFrame', detail: {} };
  if (frames.length < MIN_SLICES) {
    return { ok: false, reason: 'tooFew', detail: { slices: frames.length, min: MIN_SLICES } };
  }
  const missing = frames.findIndex(
    (f) => !finite(f.position, 3) || !finite(f.orientation, 6) || !finite(f.pixelSpacing, 2) || !f.rows || !f.columns,
  );
  if (missing >= 0) return { ok: false, reason: 'noGeometry', detail: { frame: missing + 1 } };
  const g = frames as Required<Pick<FrameGeometry, 'position' | 'orientation' | 'pixelSpacing' | 'rows' | 'columns'>>[] &
    FrameGeometry[];

  const fors = new Set(frames.map((f) => f.frameOfReference ?? ''));
  if (fors.size > 1) return { ok: false, reason: 'frameOfReference', detail: { count: fors.size } };

  const first = g[0];
  for (const f of g) {
    if (f.rows !== first.rows || f.columns !== first.columns) {
      return {
        ok: false,
        reason: 'mixedSize',
        detail: { a: `${first.columns}×${first.rows}`, b: `${f.columns}×${f.rows}` },
      };
    }
    const differs = (x: number, y: number) => Math.abs(x - y) > PIXEL_SPACING_TOLERANCE * Math.max(Math.abs(x), Math.abs(y));
    if (differs(f.pixelSpacing[0], first.pixelSpacing[0]) || differs(f.pixelSpacing[1], first.pixelSpacing[1])) {
      return {
        ok: false,
        reason: 'mixedSpacing',
        detail: { a: first.pixelSpacing.join('/'), b: f.pixelSpacing.join('/') },
      };
    }
  }

  // Unit row and column directions of each frame; all must agree.
  const unit = (v: Vec3): Vec3 | undefined => {
    const n = norm(v);
    return n > 0 ? scale(v, 1 / n) : undefined;
  };
  const axes = g.map((f) => {
    const o = f.orientation;
    return [unit([o[0], o[1], o[2]]), unit([o[3], o[4], o[5]])] as const;
  });
  const [row, col] = axes[0];
  if (!row || !col || Math.abs(dot(row, col)) > 0.01) return { ok: false, reason: 'noGeometry', detail: { frame: 1 } };
  for (const [r, c] of axes) {
    if (!r || !c || [0, 1, 2].some((k) => Math.abs(r[k] - row[k]) > ORIENTATION_TOLERANCE || Math.abs(c[k] - col[k]) > ORIENTATION_TOLERANCE)) {
      return { ok: false, reason: 'mixedOrientation', detail: {} };
    }
  }
  const normal = unit(cross(row, col)) as Vec3;

  // Slices along the normal.
  const pos = g.map((f) => f.position as unknown as Vec3);
  const order = pos.map((p, i) => ({ i, d: dot(p, normal) })).sort((a, b) => a.d - b.d);
  const gaps = order.slice(1).map((o, k) => o.d - order[k].d);
  const pixel = Math.min(first.pixelSpacing[0], first.pixelSpacing[1]);
  if (gaps.some((d) => d < Math.max(0.01, pixel * 0.01))) {
    return { ok: false, reason: 'duplicatePositions', detail: {} };
  }

  // Gantry tilt / shear: every slice's origin must lie on the line through
  // the first one along the normal. The in-plane offset is how far it would
  // be drawn from where it is; a tenth of a pixel (at least 0.05 mm, which
  // absorbs the rounding of decimal strings) is tolerated.
  const origin = pos[order[0].i];
  const last = pos[order[order.length - 1].i];
  let worstOffset = 0;
  for (const o of order) {
    const rel = sub(pos[o.i], origin);
    const inPlane = sub(rel, scale(normal, dot(rel, normal)));
    worstOffset = Math.max(worstOffset, norm(inPlane));
  }
  if (worstOffset > Math.max(0.05, pixel * 0.1)) {
    const span = sub(last, origin);
    const angle = (Math.acos(Math.min(1, Math.abs(dot(span, normal)) / (norm(span) || 1))) * 180) / Math.PI;
    return { ok: false, reason: 'tilt', detail: { angle: round(angle, 1), offset: round(worstOffset, 2) } };
  }

  // Even spacing: each gap within 5 % of the mean (at least 0.02 mm, the
  // rounding of decimal strings).
  const spacing = (order[order.length - 1].d - order[0].d) / (order.length - 1);
  const tolerance = Math.max(0.02, spacing * 0.05);
  const min = Math.min(...gaps);
  const max = Math.max(...gaps);
  if (max - spacing > tolerance || spacing - min > tolerance) {
    return { ok: false, reason: 'irregularSpacing', detail: { min: round(min, 2), max: round(max, 2) } };
  }
  return { ok: true, order: order.map((o) => o.i), spacing, normal };
}

type Json = Record<string, { Value?: unknown[] } | undefined>;

function numbers(ds: Json | undefined, tag: string): number[] | undefined {
  const v = ds?.[tag]?.Value;
  if (!Array.isArray(v)) return undefined;
  const out = v.map((x) => Number(x));
  return out.every((x) => Number.isFinite(x)) ? out : undefined;
}

function item(ds: Json | undefined, tag: string, index = 0): Json | undefined {
  const v = ds?.[tag]?.Value;
  return Array.isArray(v) ? (v[index] as Json | undefined) : undefined;
}

/** The geometry of frame `frame` (1-based) of an instance's DICOM JSON.
 * Enhanced multi-frame objects carry it in the Per-Frame (5200,9230) or
 * Shared (5200,9229) Functional Groups; a multi-frame object without a
 * per-frame position is flagged. */
export function frameGeometry(ds: Json, frame: number): FrameGeometry {
  const frames = numbers(ds, '00280008')?.[0] ?? 1;
  const perFrame = item(ds, '52009230', frame - 1);
  const shared = item(ds, '52009229');
  const fg = (seq: string, tag: string) =>
    numbers(item(perFrame, seq), tag) ?? numbers(item(shared, seq), tag);
  const position = numbers(item(perFrame, '00209113'), '00200032') ?? (frames > 1 ? undefined : numbers(ds, '00200032'));
  return {
    position,
    orientation: fg('00209116', '00200037') ?? numbers(ds, '00200037'),
    pixelSpacing: fg('00289110', '00280030') ?? numbers(ds, '00280030'),
    rows: numbers(ds, '00280010')?.[0],
    columns: numbers(ds, '00280011')?.[0],
    frameOfReference: (ds['00200052']?.Value?.[0] as string | undefined) ?? '',
    multiFrameWithoutGeometry: frames > 1 && position === undefined,
  };
}
