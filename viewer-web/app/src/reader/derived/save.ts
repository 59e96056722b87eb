// The reader's saved work as DICOM, built in the browser with dcmjs and
// stored through STOW-RS (PS3.18 10.5) so that every DICOM viewer sees it:
// - measurements as a Comprehensive SR Imaging Measurement Report
//   (PS3.16 TID 1500), one Measurement Group (TID 1410) per measurement,
//   with the measured values and the SCOORD it was drawn as;
// - key images as a Key Object Selection Document (PS3.3 A.35.4, TID 2010).
// Each save writes new instances (a new version); the newest one the viewer
// wrote is what it loads back.

import dcmjs, { type Naturalized } from 'dcmjs';
import { DICOMWEB_ROOT, type DicomJson, str } from '../../dicomweb';

export const COMPREHENSIVE_SR = '1.2.840.10008.5.1.4.1.1.88.33';
export const KEY_OBJECT_SELECTION = '1.2.840.10008.5.1.4.1.1.88.59';
/** How the viewer recognises the documents it wrote (General Equipment, PS3.3 C.7.5.1). */
export const OWN_MANUFACTURER = 'Sen PACS';
export const OWN_MODEL = 'Sen PACS viewer';
const IMPLEMENTATION_CLASS_UID = '2.25.140167355137384209587116716455617236377';

export interface ImageRef {
  sop: string;
  sopClass: string;
  series: string;
  /** 1-based frame number for multi-frame instances, else undefined. */
  frame: number | undefined;
  instance: DicomJson;
}

export interface SavedMeasurement {
  tool: 'Length' | 'RectangleROI' | 'EllipticalROI' | 'Angle';
  image: ImageRef;
  /** SCOORD type and image coordinates (PS3.3 C.18.6.1.2). */
  graphicType: 'POLYLINE' | 'ELLIPSE';
  points: [number, number][];
  length?: number;
  angle?: number;
  area?: number;
  mean?: number;
  stdDev?: number;
  /** UCUM code of the mean/SD (e.g. [hnsf'U] for CT), when known. */
  modalityUnit?: string;
}

export interface Series {
  uid: string;
  number: number;
  nextInstance: number;
}

type Code = [value: string, scheme: string, meaning: string];

const code = ([CodeValue, CodingSchemeDesignator, CodeMeaning]: Code): Naturalized => ({
  CodeValue,
  CodingSchemeDesignator,
  CodeMeaning,
});

const LANGUAGE: Code = ['121049', 'DCM', 'Language of Content Item and Descendants'];
const EN_US: Code = ['en-US', 'RFC5646', 'English (United States)'];
const OBSERVER_TYPE: Code = ['121005', 'DCM', 'Observer Type'];
const PERSON: Code = ['121006', 'DCM', 'Person'];
const PERSON_NAME: Code = ['121008', 'DCM', 'Person Observer Name'];
const PROCEDURE_REPORTED: Code = ['121058', 'DCM', 'Procedure reported'];
const IMAGING_PROCEDURE: Code = ['363679005', 'SCT', 'Imaging procedure'];
const REPORT: Code = ['126000', 'DCM', 'Imaging Measurement Report'];
const MEASUREMENTS: Code = ['126010', 'DCM', 'Imaging Measurements'];
const GROUP: Code = ['125007', 'DCM', 'Measurement Group'];
const TRACKING_ID: Code = ['112039', 'DCM', 'Tracking Identifier'];
const TRACKING_UID: Code = ['112040', 'DCM', 'Tracking Unique Identifier'];
const IMAGE_REGION: Code = ['111030', 'DCM', 'Image Region'];
const SOURCE: Code = ['260753009', 'SCT', 'Source'];
const LENGTH: Code = ['410668003', 'SCT', 'Length'];
const AREA: Code = ['42798000', 'SCT', 'Area'];
const MEAN: Code = ['373098007', 'SCT', 'Mean'];
const SD: Code = ['386136009', 'SCT', 'Standard Deviation'];
const ANGLE: Code = ['1483009', 'SCT', 'Angle'];
const OF_INTEREST: Code = ['113000', 'DCM', 'Of Interest'];
const KEY_DESCRIPTION: Code = ['113012', 'DCM', 'Key Object Description'];

const MM: Code = ['mm', 'UCUM', 'millimeter'];
const MM2: Code = ['mm2', 'UCUM', 'square millimeter'];
const DEG: Code = ['deg', 'UCUM', 'degree'];
const UNITLESS: Code = ['1', 'UCUM', 'no units'];
const HU: Code = ["[hnsf'U]", 'UCUM', 'Hounsfield unit'];

/** DS is at most 16 characters (PS3.5 6.2). */
function ds(v: number): string {
  for (let p = 10; p > 1; p--) {
    const s = String(Number(v.toPrecision(p)));
    if (s.length <= 16) return s;
  }
  return v.toExponential(4);
}

function now(): { date: string; time: string } {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return {
    date: `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}`,
    time: `${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`,
  };
}

const pn = (j: DicomJson, tag: string): unknown => {
  const v = j[tag]?.Value?.[0] as { Alphabetic?: string } | undefined;
  return v?.Alphabetic ? [{ Alphabetic: v.Alphabetic }] : '';
};

/** Patient, study and equipment attributes common to both documents, from
 * an image of the study (PS3.3 C.7.1.1, C.7.2.1, C.7.5.1). */
function header(study: string, ref: DicomJson, sopClass: string, modality: string, series: Series, description: string): Naturalized {
  const t = now();
  return {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: sopClass,
    SOPInstanceUID: dcmjs.data.DicomMetaDictionary.uid(),
    InstanceCreationDate: t.date,
    InstanceCreationTime: t.time,
    StudyDate: str(ref, '00080020'),
    StudyTime: str(ref, '00080030'),
    ContentDate: t.date,
    ContentTime: t.time,
    AccessionNumber: str(ref, '00080050'),
    Modality: modality,
    Manufacturer: OWN_MANUFACTURER,
    ManufacturerModelName: OWN_MODEL,
    ReferringPhysicianName: pn(ref, '00080090'),
    StudyDescription: str(ref, '00081030'),
    SeriesDescription: description,
    ReferencedPerformedProcedureStepSequence: [],
    PatientName: pn(ref, '00100010'),
    PatientID: str(ref, '00100020'),
    PatientBirthDate: str(ref, '00100030'),
    PatientSex: str(ref, '00100040'),
    StudyInstanceUID: study,
    SeriesInstanceUID: series.uid,
    StudyID: str(ref, '00200010'),
    SeriesNumber: String(series.number),
    InstanceNumber: String(series.nextInstance),
  };
}

/** Current Requested Procedure Evidence (PS3.3 C.17.2.3): every image referenced. */
function evidence(study: string, refs: ImageRef[]): Naturalized[] {
  const bySeries = new Map<string, Map<string, ImageRef>>();
  for (const r of refs) {
    const m = bySeries.get(r.series) ?? new Map<string, ImageRef>();
    m.set(r.sop, r);
    bySeries.set(r.series, m);
  }
  return [{
    StudyInstanceUID: study,
    ReferencedSeriesSequence: [...bySeries].map(([series, sops]) => ({
      SeriesInstanceUID: series,
      ReferencedSOPSequence: [...sops.values()].map((r) => ({
        ReferencedSOPClassUID: r.sopClass,
        ReferencedSOPInstanceUID: r.sop,
      })),
    })),
  }];
}

function imageItem(r: ImageRef, relationship: string, concept?: Code): Naturalized {
  const ref: Naturalized = { ReferencedSOPClassUID: r.sopClass, ReferencedSOPInstanceUID: r.sop };
  if (r.frame !== undefined) ref.ReferencedFrameNumber = String(r.frame);
  const item: Naturalized = { RelationshipType: relationship, ValueType: 'IMAGE', ReferencedSOPSequence: [ref] };
  if (concept) item.ConceptNameCodeSequence = [code(concept)];
  return item;
}

function num(concept: Code, value: number, unit: Code): Naturalized {
  return {
    RelationshipType: 'CONTAINS',
    ValueType: 'NUM',
    ConceptNameCodeSequence: [code(concept)],
    MeasuredValueSequence: [{ MeasurementUnitsCodeSequence: [code(unit)], NumericValue: ds(value) }],
  };
}

function group(m: SavedMeasurement, i: number): Naturalized {
  const content: Naturalized[] = [
    { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'TEXT', ConceptNameCodeSequence: [code(TRACKING_ID)], TextValue: `Measurement ${i + 1}` },
    { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'UIDREF', ConceptNameCodeSequence: [code(TRACKING_UID)], UID: dcmjs.data.DicomMetaDictionary.uid() },
  ];
  if (m.length !== undefined) content.push(num(LENGTH, m.length, MM));
  if (m.angle !== undefined) content.push(num(ANGLE, m.angle, DEG));
  if (m.area !== undefined) content.push(num(AREA, m.area, MM2));
  const unit: Code = m.modalityUnit === 'HU' ? HU : UNITLESS;
  if (m.mean !== undefined) content.push(num(MEAN, m.mean, unit));
  if (m.stdDev !== undefined) content.push(num(SD, m.stdDev, unit));
  content.push({
    RelationshipType: 'CONTAINS',
    ValueType: 'SCOORD',
    ConceptNameCodeSequence: [code(IMAGE_REGION)],
    GraphicType: m.graphicType,
    GraphicData: m.points.flat().map((v) => Math.fround(v)),
    ContentSequence: [imageItem(m.image, 'SELECTED FROM', SOURCE)],
  });
  return {
    RelationshipType: 'CONTAINS',
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code(GROUP)],
    ContinuityOfContent: 'SEPARATE',
    ContentSequence: content,
  };
}

/** A TID 1500 Measurement Report of `ms` (at least one). */
export function buildMeasurementReport(study: string, ms: SavedMeasurement[], series: Series, observer: string): Naturalized {
  const ref = ms[0].image.instance;
  return {
    ...header(study, ref, COMPREHENSIVE_SR, 'SR', series, 'Measurements (Sen PACS)'),
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code(REPORT)],
    ContinuityOfContent: 'SEPARATE',
    PerformedProcedureCodeSequence: [],
    CurrentRequestedProcedureEvidenceSequence: evidence(study, ms.map((m) => m.image)),
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'UNVERIFIED',
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '1500' }],
    ContentSequence: [
      { RelationshipType: 'HAS CONCEPT MOD', ValueType: 'CODE', ConceptNameCodeSequence: [code(LANGUAGE)], ConceptCodeSequence: [code(EN_US)] },
      { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'CODE', ConceptNameCodeSequence: [code(OBSERVER_TYPE)], ConceptCodeSequence: [code(PERSON)] },
      { RelationshipType: 'HAS OBS CONTEXT', ValueType: 'PNAME', ConceptNameCodeSequence: [code(PERSON_NAME)], PersonName: [{ Alphabetic: observer || 'Unknown' }] },
      { RelationshipType: 'HAS CONCEPT MOD', ValueType: 'CODE', ConceptNameCodeSequence: [code(PROCEDURE_REPORTED)], ConceptCodeSequence: [code(IMAGING_PROCEDURE)] },
      {
        RelationshipType: 'CONTAINS',
        ValueType: 'CONTAINER',
        ConceptNameCodeSequence: [code(MEASUREMENTS)],
        ContinuityOfContent: 'SEPARATE',
        ContentSequence: ms.map(group),
      },
    ],
  };
}

/** A Key Object Selection of `images` (at least one), TID 2010. */
export function buildKeyObjectSelection(study: string, images: ImageRef[], series: Series): Naturalized {
  const ref = images[0].instance;
  return {
    ...header(study, ref, KEY_OBJECT_SELECTION, 'KO', series, 'Key images (Sen PACS)'),
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code(OF_INTEREST)],
    ContinuityOfContent: 'SEPARATE',
    CurrentRequestedProcedureEvidenceSequence: evidence(study, images),
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '2010' }],
    ContentSequence: [
      { RelationshipType: 'CONTAINS', ValueType: 'TEXT', ConceptNameCodeSequence: [code(KEY_DESCRIPTION)], TextValue: 'Key images selected in the Sen PACS viewer' },
      ...images.map((r) => imageItem(r, 'CONTAINS')),
    ],
  };
}

/** A data set as a Part 10 file (explicit VR little endian). */
export function part10(ds: Naturalized): ArrayBuffer {
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: ds.SOPClassUID,
    MediaStorageSOPInstanceUID: ds.SOPInstanceUID,
    TransferSyntaxUID: '1.2.840.10008.1.2.1',
    ImplementationClassUID: IMPLEMENTATION_CLASS_UID,
    ImplementationVersionName: 'SENPACS_VIEWER',
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  return dict.write();
}

export class StoreError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** STOW-RS of Part 10 files into `study`, with the session's CSRF token. */
export async function stow(study: string, files: ArrayBuffer[], csrf: string | undefined): Promise<void> {
  const boundary = `sen-${crypto.randomUUID()}`;
  const parts: BlobPart[] = [];
  for (const f of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, f, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  const headers: Record<string, string> = {
    'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
    Accept: 'application/dicom+json',
  };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const r = await fetch(`${DICOMWEB_ROOT}/studies/${encodeURIComponent(study)}`, {
    method: 'POST',
    headers,
    body: new Blob(parts),
    credentials: 'same-origin',
  });
  if (!r.ok) {
    const body = await r.text().catch(() => '');
    throw new StoreError(r.status, `${r.status} ${r.statusText} ${body.slice(0, 200)}`.trim());
  }
}
