// Which series of a study hold derived objects (segmentations, structured
// reports, key object selections, presentation states) rather than images.
// Kept tiny: the reader imports it on its critical path; everything else of
// `derived/` is a separate chunk loaded after the first image.

import type { SeriesInfo } from '../study';

/** Modalities of non-image objects (PS3.3 C.7.3.1.1.1): they are listed in
 * the derived-objects panel, not in the series strip. */
export const DERIVED_MODALITIES = new Set(['SEG', 'SR', 'KO', 'PR', 'DOC', 'RWV']);

export function isDerivedSeries(s: SeriesInfo): boolean {
  return DERIVED_MODALITIES.has(s.modality);
}

/** Annotations drawn from a report of someone else (an AI's SR): shown on the
 * images, not listed or saved as the reader's own measurements. */
export const foreignAnnotations = new Set<string>();
