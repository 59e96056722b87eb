// Reads whole instances as Part 10 (WADO-RS, PS3.18 10.4) and parses them
// with dcmjs: segmentations and reports need their sequences and bulk data,
// which the metadata JSON may leave out.

import dcmjs, { type Naturalized } from 'dcmjs';
import { DICOMWEB_ROOT } from '../../dicomweb';

const enc = encodeURIComponent;

/** The first part of a `multipart/related` body. */
function firstPart(body: Uint8Array, contentType: string): Uint8Array {
  const m = /boundary="?([^";,]+)"?/i.exec(contentType);
  if (!m) return body;
  const delim = new TextEncoder().encode(`--${m[1]}`);
  const find = (from: number, pat: Uint8Array): number => {
    outer: for (let i = from; i <= body.length - pat.length; i++) {
      for (let j = 0; j < pat.length; j++) if (body[i + j] !== pat[j]) continue outer;
      return i;
    }
    return -1;
  };
  const start = find(0, delim);
  if (start < 0) throw new Error('multipart body without a boundary');
  const headersEnd = find(start, new Uint8Array([13, 10, 13, 10]));
  if (headersEnd < 0) throw new Error('multipart part without headers');
  const dataStart = headersEnd + 4;
  const crlfDelim = new Uint8Array([13, 10, ...delim]);
  const end = find(dataStart, crlfDelim);
  return body.subarray(dataStart, end < 0 ? body.length : end);
}

/** One instance, as stored (any transfer syntax), parsed and naturalized. */
export async function fetchInstance(study: string, series: string, sop: string): Promise<Naturalized> {
  const url = `${DICOMWEB_ROOT}/studies/${enc(study)}/series/${enc(series)}/instances/${enc(sop)}`;
  const r = await fetch(url, { headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' } });
  if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
  const body = new Uint8Array(await r.arrayBuffer());
  const part = firstPart(body, r.headers.get('Content-Type') ?? '');
  const copy = part.slice().buffer;
  const dict = dcmjs.data.DicomMessage.readFile(copy);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
}

/** Items of a naturalized sequence (dcmjs gives one item as an object). */
export function seq(ds: Naturalized | undefined, key: string): Naturalized[] {
  const v = ds?.[key];
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]) as Naturalized[];
}

export function text(ds: Naturalized | undefined, key: string): string {
  const v = ds?.[key];
  if (v === undefined || v === null) return '';
  if (Array.isArray(v)) return v.length ? String(v[0]) : '';
  if (typeof v === 'object' && 'Alphabetic' in (v as object)) return String((v as { Alphabetic: unknown }).Alphabetic);
  return String(v);
}

export function numbers(ds: Naturalized | undefined, key: string): number[] {
  const v = ds?.[key];
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]).map(Number).filter((n) => Number.isFinite(n));
}

/** A code's meaning, else its value. */
export function codeText(ds: Naturalized | undefined): string {
  return text(ds, 'CodeMeaning') || text(ds, 'CodeValue');
}
