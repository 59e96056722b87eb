// Hanging protocols, the pure part: which protocol fits a study, and which
// series (of the current study and of its most recent relevant prior) go in
// which viewport. No DOM, no Cornerstone: `app/test/hanging.test.mjs` runs it
// under Node. The protocols come from the server (`/api/v1/hanging-protocols`,
// the operator's JSON file or the built-in one, checked there).

export type Orientation = 'axial' | 'sagittal' | 'coronal';

export interface ViewportRule {
  study: 'current' | 'prior';
  orientation?: Orientation;
  /** Case-insensitive regular expression on Series Description. */
  description?: string;
  exclude?: string;
  /** A CT window preset key (`lung`, `mediastinum`, …). */
  window?: string;
}

export interface Protocol {
  id: string;
  name?: string;
  modality: string;
  bodyParts?: string[];
  viewports: ViewportRule[];
}

export interface Protocols {
  version: number;
  protocols: Protocol[];
}

/** What the plan needs to know of a series. */
export interface SeriesFacts {
  modality: string;
  description: string;
  bodyPart: string;
  orientation: Orientation | undefined;
}

export interface Placement {
  study: 'current' | 'prior';
  /** Index into that study's series list. */
  series: number;
  window?: string;
}

/** The plane of an image from its row and column directions (Image
 * Orientation (Patient), PS3.3 C.7.6.2.1.1): the patient axis its normal is
 * closest to. */
export function orientationOf(iop: number[] | undefined): Orientation | undefined {
  if (!iop || iop.length !== 6 || !iop.every(Number.isFinite)) return undefined;
  const n = [
    iop[1] * iop[5] - iop[2] * iop[4],
    iop[2] * iop[3] - iop[0] * iop[5],
    iop[0] * iop[4] - iop[1] * iop[3],
  ].map(Math.abs);
  const max = Math.max(...n);
  if (!(max > 0)) return undefined;
  return n[2] === max ? 'axial' : n[0] === max ? 'sagittal' : 'coronal';
}

function re(source: string | undefined): RegExp | undefined {
  if (!source) return undefined;
  try {
    return new RegExp(source, 'i');
  } catch {
    return /$^/; // an invalid expression matches nothing
  }
}

const same = (a: string, b: string): boolean => a.trim().toUpperCase() === b.trim().toUpperCase();

/** Whether a series' modality and body part are the protocol's (a protocol
 * without body parts fits any). */
function fits(protocol: Protocol, modality: string, bodyPart: string): boolean {
  return same(protocol.modality, modality) && (!protocol.bodyParts?.length || protocol.bodyParts.some((b) => same(b, bodyPart)));
}

/** The first protocol for this modality and body part (a protocol without
 * body parts fits any). */
export function chooseProtocol(p: Protocols | undefined, modality: string, bodyPart: string): Protocol | undefined {
  if (!p || p.version !== 1 || !Array.isArray(p.protocols)) return undefined;
  return p.protocols.find((x) => fits(x, modality, bodyPart));
}

/** Whether a prior fits the protocol (same modality, a listed body part). */
export function priorFits(protocol: Protocol, series: SeriesFacts[]): boolean {
  return series.some((s) => fits(protocol, s.modality, s.bodyPart));
}

/** Each rule of the protocol filled with the first unused series that
 * matches it (modality, orientation, description and not exclude); rules
 * nothing matches are left out. */
export function place(protocol: Protocol, current: SeriesFacts[], prior: SeriesFacts[] | undefined): Placement[] {
  const used = { current: new Set<number>(), prior: new Set<number>() };
  const out: Placement[] = [];
  for (const rule of protocol.viewports) {
    const list = rule.study === 'prior' ? prior : current;
    if (!list) continue;
    const want = re(rule.description);
    const not = re(rule.exclude);
    const i = list.findIndex(
      (s, k) => !used[rule.study].has(k) &&
        same(s.modality, protocol.modality) &&
        (!rule.orientation || s.orientation === rule.orientation) &&
        (!want || want.test(s.description)) &&
        !(not && not.test(s.description)),
    );
    if (i < 0) continue;
    used[rule.study].add(i);
    out.push({ study: rule.study, series: i, window: rule.window });
  }
  return out;
}
