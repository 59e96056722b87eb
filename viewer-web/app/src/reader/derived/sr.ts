// Structured reports read for display: TID 1500 measurement reports (each
// Measurement Group, PS3.16 TID 1501/1410, becomes one item) and the
// findings of any other Comprehensive/Enhanced/Basic Text SR (each NUM, CODE
// or TEXT content item outside a group becomes one item). A spatial
// coordinate (SCOORD, PS3.3 C.18.6) with the image it is SELECTED FROM is
// kept so that the item can be drawn on that image and jumped to.

import { type Naturalized } from 'dcmjs';
import { codeText, numbers, seq, text } from './part10';

export interface SrGraphic {
  /** POINT, MULTIPOINT, POLYLINE, CIRCLE or ELLIPSE (PS3.3 C.18.6.1.2). */
  type: string;
  /** Image coordinates (column, row); 0,0 is the top-left corner of the top-left pixel. */
  points: [number, number][];
  sop: string;
  frame: number;
}

export interface SrItem {
  title: string;
  lines: string[];
  /** The first numeric measurement, with its unit (code value of UCUM). */
  value?: { name: string; value: number; unit: string };
  /** Every numeric measurement of the item, by concept code (scheme:value). */
  values: { code: string; value: number; unit: string }[];
  graphic?: SrGraphic;
}

export interface SrDocument {
  sop: string;
  series: string;
  title: string;
  manufacturer: string;
  date: string;
  time: string;
  items: SrItem[];
}

/** At most this many items are read from one report (a report is not a data store). */
const MAX_ITEMS = 500;

const concept = (item: Naturalized): string => codeText(seq(item, 'ConceptNameCodeSequence')[0]);
const conceptCode = (item: Naturalized): string => {
  const c = seq(item, 'ConceptNameCodeSequence')[0];
  return `${text(c, 'CodingSchemeDesignator')}:${text(c, 'CodeValue')}`;
};

/** "Name: value" of a NUM, CODE, TEXT, DATE… content item, or undefined. */
function valueLine(item: Naturalized): string | undefined {
  const name = concept(item);
  switch (text(item, 'ValueType')) {
    case 'NUM': {
      const mv = seq(item, 'MeasuredValueSequence')[0];
      if (!mv) return `${name}: —`;
      const unit = text(seq(mv, 'MeasurementUnitsCodeSequence')[0], 'CodeValue');
      return `${name}: ${round(Number(text(mv, 'NumericValue')))} ${unit === '1' ? '' : unit}`.trim();
    }
    case 'CODE':
      return `${name}: ${codeText(seq(item, 'ConceptCodeSequence')[0])}`;
    case 'TEXT':
      return `${name}: ${text(item, 'TextValue')}`;
    case 'DATE':
      return `${name}: ${text(item, 'Date')}`;
    case 'PNAME':
      return `${name}: ${text(item, 'PersonName')}`;
    default:
      return undefined;
  }
}

function round(n: number): string {
  return Number.isFinite(n) ? String(Math.round(n * 100) / 100) : '—';
}

/** The first SCOORD at or below `item` whose IMAGE child names its image. */
function findGraphic(item: Naturalized, depth = 0): SrGraphic | undefined {
  if (depth > 8) return undefined;
  if (text(item, 'ValueType') === 'SCOORD') {
    const flat = numbers(item, 'GraphicData');
    const image = seq(item, 'ContentSequence').find((c) => text(c, 'ValueType') === 'IMAGE');
    const ref = seq(image, 'ReferencedSOPSequence')[0];
    const sop = text(ref, 'ReferencedSOPInstanceUID');
    if (sop && flat.length >= 2) {
      const points: [number, number][] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) points.push([flat[i], flat[i + 1]]);
      return { type: text(item, 'GraphicType'), points, sop, frame: numbers(ref, 'ReferencedFrameNumber')[0] ?? 1 };
    }
  }
  for (const c of seq(item, 'ContentSequence')) {
    const g = findGraphic(c, depth + 1);
    if (g) return g;
  }
  return undefined;
}

/** The NUM children of an item (or the item itself) with their values. */
function numericValues(items: Naturalized[]): SrItem['values'] {
  const out: SrItem['values'] = [];
  for (const c of items) {
    if (text(c, 'ValueType') !== 'NUM') continue;
    const mv = seq(c, 'MeasuredValueSequence')[0];
    const v = Number(text(mv, 'NumericValue'));
    if (mv && Number.isFinite(v)) {
      out.push({ code: conceptCode(c), value: v, unit: text(seq(mv, 'MeasurementUnitsCodeSequence')[0], 'CodeValue') });
    }
  }
  return out;
}

/** TID 1501/1410/1411 Measurement Group (125007, DCM) as one item. */
function groupItem(group: Naturalized): SrItem {
  const children = seq(group, 'ContentSequence');
  let tracking = '';
  let finding = '';
  const lines: string[] = [];
  let value: SrItem['value'];
  for (const c of children) {
    const code = conceptCode(c);
    if (code === 'DCM:112039') tracking = text(c, 'TextValue');
    else if (code === 'DCM:121071') finding = codeText(seq(c, 'ConceptCodeSequence')[0]);
    else if (code === 'DCM:112040') continue;
    else {
      const line = valueLine(c);
      if (line) lines.push(line);
      if (!value && text(c, 'ValueType') === 'NUM') {
        const mv = seq(c, 'MeasuredValueSequence')[0];
        const v = Number(text(mv, 'NumericValue'));
        if (mv && Number.isFinite(v)) {
          value = { name: concept(c), value: v, unit: text(seq(mv, 'MeasurementUnitsCodeSequence')[0], 'CodeValue') };
        }
      }
    }
  }
  return {
    title: [finding, tracking].filter(Boolean).join(' · ') || concept(group),
    lines,
    value,
    values: numericValues(children),
    graphic: findGraphic(group),
  };
}

/** The displayable items of a report's content tree. */
export function readReport(ds: Naturalized): SrDocument {
  const items: SrItem[] = [];
  const walk = (item: Naturalized, depth: number) => {
    if (items.length >= MAX_ITEMS || depth > 16) return;
    const rel = text(item, 'RelationshipType');
    // Document context (language, observer, procedure) is not a finding.
    if (depth === 1 && (rel === 'HAS OBS CONTEXT' || rel === 'HAS CONCEPT MOD')) return;
    if (text(item, 'ValueType') === 'CONTAINER') {
      if (conceptCode(item) === 'DCM:125007') {
        items.push(groupItem(item));
        return;
      }
      // The Image Library (TID 1600) lists evidence, not findings.
      if (conceptCode(item) === 'DCM:111028') return;
      for (const c of seq(item, 'ContentSequence')) walk(c, depth + 1);
      return;
    }
    const line = valueLine(item);
    if (!line) return;
    const mv = seq(item, 'MeasuredValueSequence')[0];
    const v = Number(text(mv, 'NumericValue'));
    items.push({
      title: concept(item),
      lines: [line],
      value: mv && Number.isFinite(v)
        ? { name: concept(item), value: v, unit: text(seq(mv, 'MeasurementUnitsCodeSequence')[0], 'CodeValue') }
        : undefined,
      values: numericValues([item]),
      graphic: findGraphic(item),
    });
  };
  walk(ds, 0);
  return {
    sop: text(ds, 'SOPInstanceUID'),
    series: text(ds, 'SeriesInstanceUID'),
    title: concept(ds) || text(ds, 'SeriesDescription') || 'SR',
    manufacturer: text(ds, 'Manufacturer'),
    date: text(ds, 'ContentDate'),
    time: text(ds, 'ContentTime'),
    items,
  };
}

/** The Cornerstone tool that draws a graphic of this shape (PS3.3
 * C.18.6.1.2), or undefined when the viewer cannot draw it. */
export function toolForGraphic(g: SrGraphic): string | undefined {
  const n = g.points.length;
  if (g.type === 'POLYLINE' && n === 2) return 'Length';
  if (g.type === 'POLYLINE' && n === 3) return 'Angle';
  if (g.type === 'ELLIPSE' && n === 4) return 'EllipticalROI';
  if (g.type === 'POLYLINE' && n === 5 && isAxisAlignedRect(g.points)) return 'RectangleROI';
  return undefined;
}

function isAxisAlignedRect(p: [number, number][]): boolean {
  const eq = (a: number, b: number) => Math.abs(a - b) < 1e-3;
  if (!eq(p[0][0], p[4][0]) || !eq(p[0][1], p[4][1])) return false;
  for (let i = 0; i < 4; i++) {
    const [a, b] = [p[i], p[i + 1]];
    if (!eq(a[0], b[0]) && !eq(a[1], b[1])) return false;
  }
  return true;
}

/** A rectangle's closed polyline as the four corners RectangleROI keeps:
 * top-left, top-right, bottom-left, bottom-right. */
export function rectCorners(p: [number, number][]): [number, number][] {
  const xs = p.map((q) => q[0]);
  const ys = p.map((q) => q[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  return [[x0, y0], [x1, y0], [x0, y1], [x1, y1]];
}
