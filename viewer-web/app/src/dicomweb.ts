// The few DICOMweb calls every part of the viewer needs. The archive serves
// the viewer and the API from one origin: paths are relative to it.

export const DICOMWEB_ROOT = '/dicom-web';

/** A DICOM JSON data set (PS3.18 F.2). */
export type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string; InlineBinary?: string }>;

export class HttpError extends Error {
  constructor(readonly status: number, readonly url: string, message: string) {
    super(message);
  }
}

/** Requests started before their user's code arrived (`prefetchJson`), each taken once by `getJson`. */
const early = new Map<string, Promise<DicomJson[]>>();

/** Starts `getJson(path)` now; the next `getJson(path)` (without a signal) gets its answer.
 * `preloaded`: the page preloads this URL (`<link rel="preload" as="fetch">`),
 * so the request carries no headers of its own (the browser reuses a preload
 * only for the same request; the archive answers DICOM JSON by default). */
export function prefetchJson(path: string, preloaded = false): Promise<DicomJson[]> {
  let p = early.get(path);
  if (!p) {
    p = fetchJson(path, undefined, preloaded);
    p.catch(() => undefined);
    early.set(path, p);
  }
  return p;
}

export function getJson(path: string, signal?: AbortSignal): Promise<DicomJson[]> {
  const e = signal ? undefined : early.get(path);
  if (e) {
    early.delete(path);
    return e;
  }
  return fetchJson(path, signal);
}

async function fetchJson(path: string, signal?: AbortSignal, plain = false): Promise<DicomJson[]> {
  const url = path.startsWith('http') ? path : `${DICOMWEB_ROOT}${path}`;
  const r = await fetch(url, plain ? {} : { headers: { Accept: 'application/dicom+json' }, signal });
  if (r.status === 204) return [];
  if (!r.ok) {
    const text = await r.text().catch(() => '');
    throw new HttpError(r.status, url, `${r.status} ${r.statusText}: ${text.slice(0, 300)}`);
  }
  return (await r.json()) as DicomJson[];
}

/** A QIDO-RS search: the matches and the total number of matches before
 * limit/offset (the archive's `X-Total-Count`, when it sends one). */
export async function qido(path: string, signal?: AbortSignal): Promise<{ rows: DicomJson[]; total?: number }> {
  const url = `${DICOMWEB_ROOT}${path}`;
  const r = await fetch(url, { headers: { Accept: 'application/dicom+json' }, signal });
  if (!r.ok && r.status !== 204) {
    const text = await r.text().catch(() => '');
    throw new HttpError(r.status, url, `${r.status} ${r.statusText}: ${text.slice(0, 300)}`);
  }
  const rows = r.status === 204 ? [] : ((await r.json()) as DicomJson[]);
  const header = r.headers.get('X-Total-Count');
  const total = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
  return { rows, total };
}

/** The first value of an attribute given by its tag (`0010,0010` as `00100010`). */
export function value(ds: DicomJson | undefined, tag: string): unknown {
  return ds?.[tag]?.Value?.[0];
}

export function str(ds: DicomJson | undefined, tag: string): string {
  const v = value(ds, tag);
  if (v === undefined || v === null) return '';
  if (typeof v === 'object' && v !== null && 'Alphabetic' in v) {
    return String((v as { Alphabetic?: string }).Alphabetic ?? '');
  }
  return String(v);
}

export function num(ds: DicomJson | undefined, tag: string): number | undefined {
  const v = value(ds, tag);
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/** A person name for display: `Nguyễn^Văn An` → `Nguyễn Văn An`. */
export function personName(ds: DicomJson | undefined, tag: string): string {
  return str(ds, tag).split('^').filter(Boolean).join(' ');
}
