// The DICOM tag browser: the current image's metadata (DICOM JSON from
// WADO-RS) as a filterable tree, with the names of the common attributes.

import type { DicomJson } from '../dicomweb';
import { t } from '../i18n';
import { icon } from './icons';

const NAMES: Record<string, string> = {
  '00020010': 'Transfer Syntax UID', '00080005': 'Specific Character Set', '00080008': 'Image Type',
  '00080012': 'Instance Creation Date', '00080013': 'Instance Creation Time', '00080016': 'SOP Class UID',
  '00080018': 'SOP Instance UID', '00080020': 'Study Date', '00080021': 'Series Date', '00080022': 'Acquisition Date',
  '00080023': 'Content Date', '00080030': 'Study Time', '00080031': 'Series Time', '00080032': 'Acquisition Time',
  '00080033': 'Content Time', '00080050': 'Accession Number', '00080060': 'Modality', '00080061': 'Modalities in Study',
  '00080064': 'Conversion Type', '00080070': 'Manufacturer', '00080080': 'Institution Name',
  '00080090': "Referring Physician's Name", '00081010': 'Station Name', '00081030': 'Study Description',
  '0008103E': 'Series Description', '00081040': 'Institutional Department Name', '00081090': "Manufacturer's Model Name",
  '00082111': 'Derivation Description', '00100010': "Patient's Name", '00100020': 'Patient ID',
  '00100030': "Patient's Birth Date", '00100040': "Patient's Sex", '00101010': "Patient's Age", '00101020': "Patient's Size",
  '00101030': "Patient's Weight", '00180015': 'Body Part Examined', '00180050': 'Slice Thickness', '00180060': 'KVP',
  '00180088': 'Spacing Between Slices', '00181020': 'Software Versions', '00181030': 'Protocol Name',
  '00180040': 'Cine Rate', '00181063': 'Frame Time', '00181065': 'Frame Time Vector', '00181150': 'Exposure Time',
  '00181151': 'X-Ray Tube Current', '00181152': 'Exposure', '00181210': 'Convolution Kernel', '00185100': 'Patient Position',
  '00180080': 'Repetition Time', '00180081': 'Echo Time', '00180087': 'Magnetic Field Strength', '00181314': 'Flip Angle',
  '00185101': 'View Position', '0020000D': 'Study Instance UID', '0020000E': 'Series Instance UID', '00200010': 'Study ID',
  '00200011': 'Series Number', '00200012': 'Acquisition Number', '00200013': 'Instance Number',
  '00200020': 'Patient Orientation', '00200032': 'Image Position (Patient)', '00200037': 'Image Orientation (Patient)',
  '00200052': 'Frame of Reference UID', '00201040': 'Position Reference Indicator', '00201041': 'Slice Location',
  '00201206': 'Number of Study Related Series', '00201208': 'Number of Study Related Instances',
  '00201209': 'Number of Series Related Instances', '00280002': 'Samples per Pixel',
  '00280004': 'Photometric Interpretation', '00280006': 'Planar Configuration', '00280008': 'Number of Frames',
  '00280009': 'Frame Increment Pointer', '00280010': 'Rows', '00280011': 'Columns', '00280030': 'Pixel Spacing',
  '00280034': 'Pixel Aspect Ratio', '00280100': 'Bits Allocated', '00280101': 'Bits Stored', '00280102': 'High Bit',
  '00280103': 'Pixel Representation', '00281050': 'Window Center', '00281051': 'Window Width',
  '00281052': 'Rescale Intercept', '00281053': 'Rescale Slope', '00281054': 'Rescale Type',
  '00281055': 'Window Center & Width Explanation', '00282110': 'Lossy Image Compression', '00321060': 'Requested Procedure Description',
  '00400244': 'Performed Procedure Step Start Date', '00400253': 'Performed Procedure Step ID', '7FE00010': 'Pixel Data',
  '00186011': 'Sequence of Ultrasound Regions', '00186012': 'Region Spatial Format', '00186014': 'Region Data Type',
  '0018602C': 'Physical Delta X', '0018602E': 'Physical Delta Y', '00186024': 'Physical Units X Direction',
  '00186026': 'Physical Units Y Direction', '00080100': 'Code Value', '00080102': 'Coding Scheme Designator',
  '00080104': 'Code Meaning', '00181164': 'Imager Pixel Spacing', '00282112': 'Lossy Image Compression Ratio',
};

function formatTag(tag: string): string {
  return `(${tag.slice(0, 4)},${tag.slice(4)})`;
}

function formatValue(e: DicomJson[string]): string {
  if (e.BulkDataURI) return `[bulk data] ${e.BulkDataURI}`;
  if (e.InlineBinary) return `[binary, ${Math.floor((e.InlineBinary.length * 3) / 4)} bytes]`;
  const v = e.Value ?? [];
  return v
    .map((x) => {
      if (x && typeof x === 'object') {
        const pn = x as { Alphabetic?: string; Ideographic?: string; Phonetic?: string };
        if ('Alphabetic' in pn || 'Ideographic' in pn) return [pn.Alphabetic, pn.Ideographic, pn.Phonetic].filter(Boolean).join('=');
        return '';
      }
      return String(x);
    })
    .join('\\');
}

function rows(ds: DicomJson, depth: number, out: HTMLElement[]): void {
  for (const tag of Object.keys(ds).sort()) {
    const e = ds[tag];
    const tr = document.createElement('tr');
    const name = NAMES[tag] ?? (parseInt(tag.slice(0, 4), 16) % 2 === 1 ? 'Private' : '');
    const cells = [formatTag(tag), e.vr, name, e.vr === 'SQ' ? `${e.Value?.length ?? 0} item(s)` : formatValue(e)];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i === 0) td.style.paddingLeft = `${8 + depth * 16}px`;
      tr.append(td);
    });
    tr.dataset.tag = tag;
    out.push(tr);
    if (e.vr === 'SQ') {
      for (const item of (e.Value ?? []) as DicomJson[]) rows(item, depth + 1, out);
    }
  }
}

/** Opens the tag browser as a modal dialog over `host`. */
export function openTagBrowser(host: HTMLElement, ds: DicomJson, imageNumber: number): void {
  const dialog = document.createElement('dialog');
  dialog.className = 'rd-dialog rd-tags';
  const head = document.createElement('header');
  const title = document.createElement('h2');
  title.textContent = t('rd.tagsTitle', { i: imageNumber });
  const filter = document.createElement('input');
  filter.type = 'search';
  filter.placeholder = t('rd.tagsFilter');
  const close = document.createElement('button');
  close.className = 'rd-btn';
  close.title = t('rd.close');
  close.append(icon('close'));
  close.onclick = () => dialog.close();
  head.append(title, filter, close);
  const wrap = document.createElement('div');
  wrap.className = 'rd-tags-body';
  const table = document.createElement('table');
  const body = document.createElement('tbody');
  const all: HTMLElement[] = [];
  rows(ds, 0, all);
  body.append(...all);
  table.append(body);
  wrap.append(table);
  filter.oninput = () => {
    const q = filter.value.trim().toLowerCase();
    for (const tr of all) tr.hidden = q !== '' && !(tr.textContent ?? '').toLowerCase().includes(q.replace(/[(),]/g, '')) && !(tr.textContent ?? '').toLowerCase().includes(q);
  };
  dialog.append(head, wrap);
  dialog.addEventListener('close', () => dialog.remove());
  host.append(dialog);
  dialog.showModal();
  filter.focus();
}
