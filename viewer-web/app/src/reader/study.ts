// A study as the reading view needs it: patient and study attributes from
// QIDO-RS, the series list, and per series the instance metadata (WADO-RS)
// turned into Cornerstone image ids (one per frame), sorted for scrolling.

import { wadors } from '@cornerstonejs/dicom-image-loader';
import { DICOMWEB_ROOT, type DicomJson, getJson, num, personName, str } from '../dicomweb';
import { t } from '../i18n';

export interface SeriesInfo {
  study: StudyInfo;
  uid: string;
  number: number | undefined;
  modality: string;
  description: string;
  /** Instance count from QIDO (before the metadata is read). */
  count: number;
  /** Filled by `loadSeries`. */
  imageIds: string[];
  /** Per image id: its instance's metadata, frame number and position along the slice normal. */
  frames: { instance: DicomJson; frame: number; position: number | undefined }[];
  /** True for a single multi-frame instance (cine). */
  multiFrame: boolean;
  /** Frames per second suggested by the data set (Cine Rate / Frame Time), if any. */
  cineFps: number | undefined;
  loaded: Set<string>;
  meta?: Promise<SeriesInfo>;
}

export interface StudyInfo {
  uid: string;
  json: DicomJson | undefined;
  patientName: string;
  patientId: string;
  birthDate: string;
  sex: string;
  date: string;
  description: string;
  accession: string;
  modalities: string;
  series: SeriesInfo[];
}

const imageIdToSeries = new Map<string, SeriesInfo>();

/** The series an image id belongs to (for load progress). */
export function seriesOfImageId(id: string): SeriesInfo | undefined {
  return imageIdToSeries.get(id);
}

export function studyFromQido(uid: string, s: DicomJson | undefined): StudyInfo {
  return {
    uid,
    json: s,
    patientName: personName(s, '00100010'),
    patientId: str(s, '00100020'),
    birthDate: str(s, '00100030'),
    sex: str(s, '00100040'),
    date: str(s, '00080020'),
    description: str(s, '00081030'),
    accession: str(s, '00080050'),
    modalities: ((s?.['00080061']?.Value ?? []) as string[]).join('/'),
    series: [],
  };
}

const enc = encodeURIComponent;

/** Study attributes and its series list. `onSeries` is called as soon as
 * the series list is known (before the study attributes may be). */
export async function loadStudy(uid: string, onSeries?: (study: StudyInfo) => void): Promise<StudyInfo> {
  const studyRows = getJson(`/studies?StudyInstanceUID=${enc(uid)}&includefield=00081030&includefield=00080061`);
  studyRows.catch(() => undefined);
  const series = await getJson(`/studies/${enc(uid)}/series`);
  if (series.length === 0) throw new Error(t('rd.notFound', { uid }));
  const study = studyFromQido(uid, undefined);
  study.series = series
    .map((se) => ({
      study,
      uid: str(se, '0020000E'),
      number: num(se, '00200011'),
      modality: str(se, '00080060'),
      description: str(se, '0008103E'),
      count: num(se, '00201209') ?? 0,
      imageIds: [],
      frames: [],
      multiFrame: false,
      cineFps: undefined,
      loaded: new Set<string>(),
    }))
    .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
  onSeries?.(study);
  const row = (await studyRows)[0];
  if (row) {
    Object.assign(study, studyFromQido(uid, row), { series: study.series });
  } else {
    // No study row from QIDO: the patient comes from the first series' metadata.
    const first = await loadSeries(study.series[0]);
    Object.assign(study, studyFromQido(uid, first.frames[0]?.instance), { series: study.series });
  }
  return study;
}

/** The other studies of the study's patient (newest first). */
export async function otherStudies(study: StudyInfo): Promise<StudyInfo[]> {
  if (!study.patientId) return [];
  const rows = await getJson(
    `/studies?PatientID=${enc(study.patientId)}&includefield=00081030&includefield=00080061&limit=50`,
  );
  return rows
    .map((r) => studyFromQido(str(r, '0020000D'), r))
    .filter((s) => s.uid && s.uid !== study.uid)
    .sort((a, b) => b.date.localeCompare(a.date));
}

function numbers(ds: DicomJson, tag: string): number[] {
  return ((ds[tag]?.Value ?? []) as unknown[]).map((v) => Number(v)).filter((v) => Number.isFinite(v));
}

/** Position of an instance along its slice normal (mm), if it has an image plane. */
function slicePosition(ds: DicomJson): number | undefined {
  const ipp = numbers(ds, '00200032');
  const iop = numbers(ds, '00200037');
  if (ipp.length !== 3) return num(ds, '00201041');
  if (iop.length !== 6) return ipp[2];
  const n = [
    iop[1] * iop[5] - iop[2] * iop[4],
    iop[2] * iop[3] - iop[0] * iop[5],
    iop[0] * iop[4] - iop[1] * iop[3],
  ];
  return ipp[0] * n[0] + ipp[1] * n[1] + ipp[2] * n[2];
}

/** Reads the series metadata once and builds its image ids. */
export function loadSeries(series: SeriesInfo): Promise<SeriesInfo> {
  series.meta ??= (async () => {
    const base = `${DICOMWEB_ROOT}/studies/${enc(series.study.uid)}/series/${enc(series.uid)}`;
    const instances = await getJson(`/studies/${enc(series.study.uid)}/series/${enc(series.uid)}/metadata`);
    const rows = instances
      .map((inst) => ({ inst, n: num(inst, '00200013'), pos: slicePosition(inst) }))
      .sort((a, b) => {
        if (a.n !== undefined && b.n !== undefined && a.n !== b.n) return a.n - b.n;
        if (a.pos !== undefined && b.pos !== undefined) return a.pos - b.pos;
        return 0;
      });
    const origin = location.origin;
    for (const { inst, pos } of rows) {
      const sop = str(inst, '00080018');
      const frames = Math.max(1, num(inst, '00280008') ?? 1);
      for (let f = 1; f <= frames; f++) {
        const id = `wadors:${origin}${base}/instances/${enc(sop)}/frames/${f}`;
        wadors.metaDataManager.add(id, inst as never);
        imageIdToSeries.set(id, series);
        series.imageIds.push(id);
        series.frames.push({ instance: inst, frame: f, position: frames > 1 ? undefined : pos });
      }
    }
    const first = rows[0]?.inst;
    series.multiFrame = rows.length === 1 && series.imageIds.length > 1;
    const cineRate = num(first, '00180040');
    const frameTime = num(first, '00181063');
    series.cineFps = cineRate ?? (frameTime ? Math.round(1000 / frameTime) : undefined);
    if (!series.modality) series.modality = str(first, '00080060');
    return series;
  })();
  return series.meta;
}

export function thumbnailUrl(series: SeriesInfo): string {
  return `${DICOMWEB_ROOT}/studies/${enc(series.study.uid)}/series/${enc(series.uid)}/thumbnail`;
}
