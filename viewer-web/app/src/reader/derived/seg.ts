// DICOM Segmentation (PS3.3 A.51, C.8.20) read into Cornerstone3D stack
// labelmaps over the images each frame was derived from.
//
// Supported: BINARY (1 bit, packed) and FRACTIONAL (8 bit, shown where the
// value is at least half of Maximum Fractional Value) segmentations in a
// native (uncompressed) transfer syntax, each frame referencing its source
// image by SOP Instance UID (Derivation Image Sequence) or, failing that, by
// Image Position (Patient) in the same frame of reference. Where segments
// overlap, the higher segment number is shown. Not supported: compressed
// SEG pixel data, LABELMAP segmentations, frames whose size differs from
// their source image.

import { imageLoader } from '@cornerstonejs/core';
import { Enums as ToolEnums, segmentation } from '@cornerstonejs/tools';
import { type Naturalized } from 'dcmjs';
import { numbers, seq, text } from './part10';

export interface SegSegment {
  number: number;
  label: string;
  /** sRGB 0-255 from the Recommended Display CIELab Value, else a default. */
  rgb: [number, number, number];
  opacity: number;
  visible: boolean;
}

export interface SegLayer {
  segmentationId: string;
  sop: string;
  label: string;
  segments: SegSegment[];
  /** Source image ids that carry at least one segment. */
  imageIds: string[];
}

/** Source image lookup: by SOP Instance UID (and frame), and by position. */
export interface SourceIndex {
  bySop(sop: string, frame: number): string | undefined;
  byPosition(frameOfReference: string, ipp: number[]): string | undefined;
  /** Every image id of the series the image belongs to. */
  seriesImageIds(imageId: string): string[];
}

const DEFAULT_COLOURS: [number, number, number][] = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
];

/** PS3.3 C.10.7.1.1: CIELab scaled to 0-65535, D65; to sRGB 0-255. */
export function dicomLabToRgb(lab: number[]): [number, number, number] {
  const L = (lab[0] * 100) / 65535;
  const a = (lab[1] * 255) / 65535 - 128;
  const b = (lab[2] * 255) / 65535 - 128;
  const fy = (L + 16) / 116;
  const fx = fy + a / 500;
  const fz = fy - b / 200;
  const inv = (t: number) => (t > 6 / 29 ? t ** 3 : 3 * (6 / 29) ** 2 * (t - 4 / 29));
  const [x, y, z] = [0.95047 * inv(fx), inv(fy), 1.08883 * inv(fz)];
  const lin = [
    3.2406 * x - 1.5372 * y - 0.4986 * z,
    -0.9689 * x + 1.8758 * y + 0.0415 * z,
    0.0557 * x - 0.204 * y + 1.057 * z,
  ];
  const gamma = (c: number) => (c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055);
  const rgb = lin.map((c) => Math.round(Math.max(0, Math.min(1, gamma(c))) * 255));
  return [rgb[0], rgb[1], rgb[2]];
}

/** Why a SEG cannot be shown, or undefined. */
function unsupported(ds: Naturalized): string | undefined {
  const type = text(ds, 'SegmentationType');
  if (type !== 'BINARY' && type !== 'FRACTIONAL') return `segmentation type ${type || '(none)'}`;
  const pd = ds.PixelData;
  const frames = Array.isArray(pd) ? pd : [pd];
  if (frames.length !== 1 || !(frames[0] instanceof ArrayBuffer)) return 'compressed pixel data';
  return undefined;
}

let counter = 0;

/** Builds the labelmaps of one SEG and registers them with Cornerstone. */
export function loadSegmentation(ds: Naturalized, sources: SourceIndex): SegLayer {
  const why = unsupported(ds);
  if (why) throw new Error(why);
  const rows = numbers(ds, 'Rows')[0] ?? 0;
  const cols = numbers(ds, 'Columns')[0] ?? 0;
  const frameCount = numbers(ds, 'NumberOfFrames')[0] ?? 1;
  const binary = text(ds, 'SegmentationType') === 'BINARY';
  const maxFrac = numbers(ds, 'MaximumFractionalValue')[0] ?? 255;
  const pixels = new Uint8Array((ds.PixelData as ArrayBuffer[])[0] ?? (ds.PixelData as ArrayBuffer));
  const frameOfReference = text(ds, 'FrameOfReferenceUID');
  const shared = seq(ds, 'SharedFunctionalGroupsSequence')[0];
  const perFrame = seq(ds, 'PerFrameFunctionalGroupsSequence');

  const segments: SegSegment[] = seq(ds, 'SegmentSequence').map((s, i) => {
    const lab = numbers(s, 'RecommendedDisplayCIELabValue');
    return {
      number: numbers(s, 'SegmentNumber')[0] ?? i + 1,
      label: text(s, 'SegmentLabel') || `#${i + 1}`,
      rgb: lab.length === 3 ? dicomLabToRgb(lab) : DEFAULT_COLOURS[i % DEFAULT_COLOURS.length],
      opacity: 0.5,
      visible: true,
    };
  });

  // Per source image id: the labelmap (segment number per pixel).
  const maps = new Map<string, Uint8Array>();
  const n = rows * cols;
  for (let f = 0; f < frameCount; f++) {
    const fg = perFrame[f];
    const segNo = numbers(seq(fg ?? shared, 'SegmentIdentificationSequence')[0], 'ReferencedSegmentNumber')[0] ??
      numbers(seq(shared, 'SegmentIdentificationSequence')[0], 'ReferencedSegmentNumber')[0];
    if (segNo === undefined || segNo > 255) continue;
    const src = seq(seq(fg, 'DerivationImageSequence')[0], 'SourceImageSequence')[0];
    let imageId = src
      ? sources.bySop(text(src, 'ReferencedSOPInstanceUID'), numbers(src, 'ReferencedFrameNumber')[0] ?? 1)
      : undefined;
    if (!imageId) {
      const ipp = numbers(seq(fg, 'PlanePositionSequence')[0], 'ImagePositionPatient');
      if (ipp.length === 3) imageId = sources.byPosition(frameOfReference, ipp);
    }
    if (!imageId) continue;
    let map = maps.get(imageId);
    if (!map) {
      map = new Uint8Array(n);
      maps.set(imageId, map);
    }
    if (binary) {
      const bit0 = f * n;
      for (let p = 0; p < n; p++) {
        const bit = bit0 + p;
        // PS3.5 8.1.1: packed bits, the first pixel in the least significant bit.
        if ((pixels[bit >> 3] >> (bit & 7)) & 1) map[p] = Math.max(map[p], segNo);
      }
    } else {
      const base = f * n;
      for (let p = 0; p < n && base + p < pixels.length; p++) {
        if (pixels[base + p] * 2 >= maxFrac && pixels[base + p] > 0) map[p] = Math.max(map[p], segNo);
      }
    }
  }
  if (maps.size === 0) throw new Error('no frame matches an image of this study');

  // One labelmap per image of each source series (Cornerstone pairs them by referenced image id).
  const first = maps.keys().next().value as string;
  const referenced = sources.seriesImageIds(first);
  const labelmaps = imageLoader.createAndCacheDerivedLabelmapImages(referenced);
  labelmaps.forEach((img, i) => {
    const map = maps.get(referenced[i]);
    if (!map) return;
    const data = img.getPixelData() as unknown as Uint8Array;
    if (data.length !== map.length) return;
    data.set(map);
  });
  const segmentationId = `sen-seg-${++counter}`;
  const label = text(ds, 'SeriesDescription') || text(ds, 'ContentLabel') || 'SEG';
  const config: Record<number, { segmentIndex: number; label: string; locked: boolean; active: boolean; cachedStats: Record<string, unknown> }> = {};
  for (const s of segments) config[s.number] = { segmentIndex: s.number, label: s.label, locked: true, active: false, cachedStats: {} };
  segmentation.addSegmentations([
    {
      segmentationId,
      representation: {
        type: ToolEnums.SegmentationRepresentations.Labelmap,
        data: { imageIds: labelmaps.map((i) => i.imageId) },
      },
      config: { label, segments: config },
    },
  ]);
  return { segmentationId, sop: text(ds, 'SOPInstanceUID'), label, segments, imageIds: [...maps.keys()] };
}

/** Shows `layer` in a viewport (idempotent) with its segments' colours. */
export async function showOnViewport(viewportId: string, layer: SegLayer): Promise<void> {
  const has = segmentation.state
    .getSegmentationRepresentations(viewportId, { segmentationId: layer.segmentationId })
    .length > 0;
  if (!has) {
    await segmentation.addLabelmapRepresentationToViewport(viewportId, [{ segmentationId: layer.segmentationId }]);
  }
  applyStyle(viewportId, layer);
}

/** Colour, opacity and visibility of every segment in one viewport. */
export function applyStyle(viewportId: string, layer: SegLayer): void {
  for (const s of layer.segments) {
    segmentation.config.color.setSegmentIndexColor(viewportId, layer.segmentationId, s.number, [
      s.rgb[0], s.rgb[1], s.rgb[2], Math.round(s.opacity * 255),
    ]);
    segmentation.config.visibility.setSegmentIndexVisibility(
      viewportId,
      { segmentationId: layer.segmentationId, type: ToolEnums.SegmentationRepresentations.Labelmap },
      s.number,
      s.visible,
    );
  }
}

export function removeAll(layers: SegLayer[]): void {
  for (const l of layers) {
    try {
      segmentation.removeSegmentation(l.segmentationId);
    } catch {
      // already gone with the engine
    }
  }
}
