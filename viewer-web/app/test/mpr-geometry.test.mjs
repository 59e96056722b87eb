// Unit tests of src/reader/mpr/geometry.ts (which series form a volume),
// run with Node's own test runner:
//   node --test viewer-web/app/test/
// The module is pure TypeScript without imports; `../test-support/ts.mjs` transpiles it with
// the pinned `typescript` package, so no extra runner is needed.
// tests/viewer.rs runs this file (viewer_unit_tests_under_node).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { importTs } from '../test-support/ts.mjs';

const { checkVolume, frameGeometry, MIN_SLICES } = await importTs('src/reader/mpr/geometry.ts');

const AXIAL = [1, 0, 0, 0, 1, 0];

/** n axial 64×64 slices, 1 mm pixels, positions from `z(k)`, in-plane offset `xy(k)`. */
function stack(n, { z = (k) => 2 * k, xy = () => [-32, -32], orientation = () => AXIAL, size = () => 64, spacing = () => [1, 1], fr = () => '1.2.3' } = {}) {
  return Array.from({ length: n }, (_, k) => ({
    position: [...xy(k), z(k)],
    orientation: orientation(k),
    rows: size(k),
    columns: size(k),
    pixelSpacing: spacing(k),
    frameOfReference: fr(k),
  }));
}

test('a regular axial stack forms a volume, sorted along the normal', () => {
  // Instance order reversed (head to feet), as scanners often write them.
  const frames = stack(10, { z: (k) => 40 - 2 * k });
  const r = checkVolume('CT', frames);
  assert.equal(r.ok, true);
  assert.deepEqual(r.order, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  assert.ok(Math.abs(r.spacing - 2) < 1e-9);
  assert.deepEqual(r.normal, [0, 0, 1]);
});

test('decimal rounding of positions is tolerated', () => {
  const frames = stack(50, { z: (k) => Number((0.625 * k).toFixed(2)), xy: () => [-31.95, -32.04] });
  assert.equal(checkVolume('MR', frames).ok, true);
});

test('an oblique but consistent stack forms a volume', () => {
  const c = Math.cos(0.3), s = Math.sin(0.3);
  // Rows along x, columns along (0, c, s): the normal is (0, -s, c).
  const frames = stack(8, {
    orientation: () => [1, 0, 0, 0, c, s],
    xy: () => [0, 0],
    z: () => 0,
  }).map((f, k) => ({ ...f, position: [0, -s * 3 * k, c * 3 * k] }));
  const r = checkVolume('MR', frames);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.ok(Math.abs(r.spacing - 3) < 1e-9);
});

test('gantry tilt is refused with its angle', () => {
  // The plane tilted by 15° about x, the slices still stepped along z.
  const a = (15 * Math.PI) / 180;
  const frames = stack(20, { orientation: () => [1, 0, 0, 0, Math.cos(a), Math.sin(a)] });
  const r = checkVolume('CT', frames);
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'tilt');
  assert.equal(r.detail.angle, 15);
});

test('a missing slice (irregular spacing) is refused with the range', () => {
  const zs = [0, 2, 4, 6, 8, 12, 14, 16, 18, 20];
  const r = checkVolume('CT', stack(10, { z: (k) => zs[k] }));
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'irregularSpacing');
  assert.deepEqual([r.detail.min, r.detail.max], [2, 4]);
});

test('slowly varying spacing beyond 5 % is refused', () => {
  let z = 0;
  const zs = Array.from({ length: 10 }, (_, k) => (z += k === 0 ? 0 : 1 + k * 0.05));
  const r = checkVolume('CT', stack(10, { z: (k) => zs[k] }));
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'irregularSpacing');
});

test('repeated positions (two acquisitions in one series) are refused', () => {
  const r = checkVolume('CT', stack(10, { z: (k) => 2 * (k % 5) }));
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'duplicatePositions');
});

test('mixed orientations are refused', () => {
  const frames = stack(10, { orientation: (k) => (k < 5 ? AXIAL : [0, 1, 0, 0, 0, -1]) });
  const r = checkVolume('MR', frames);
  assert.equal(r.ok, false);
  assert.equal(r.reason, 'mixedOrientation');
});

test('mixed sizes and pixel spacings are refused', () => {
  assert.equal(checkVolume('CT', stack(10, { size: (k) => (k === 3 ? 32 : 64) })).reason, 'mixedSize');
  assert.equal(checkVolume('CT', stack(10, { spacing: (k) => (k === 3 ? [0.5, 0.5] : [1, 1]) })).reason, 'mixedSpacing');
});

test('too few slices, other modalities, missing geometry, several frames of reference', () => {
  const few = checkVolume('CT', stack(MIN_SLICES - 1));
  assert.equal(few.reason, 'tooFew');
  assert.equal(few.detail.slices, MIN_SLICES - 1);
  assert.equal(checkVolume('US', stack(10)).reason, 'modality');
  const frames = stack(10);
  delete frames[4].position;
  assert.deepEqual(checkVolume('CT', frames), { ok: false, reason: 'noGeometry', detail: { frame: 5 } });
  assert.equal(checkVolume('CT', stack(10, { fr: (k) => (k < 5 ? '1.2.3' : '1.2.4') })).reason, 'frameOfReference');
});

test('frame geometry from DICOM JSON: classic, enhanced multi-frame, multi-frame without geometry', () => {
  const v = (...x) => ({ Value: x });
  const classic = {
    '00200032': v(-32, -32, 10), '00200037': v(...AXIAL), '00280030': v(1, 1),
    '00280010': v(64), '00280011': v(64), '00200052': v('1.2.3'),
  };
  assert.deepEqual(frameGeometry(classic, 1), {
    position: [-32, -32, 10], orientation: AXIAL, pixelSpacing: [1, 1], rows: 64, columns: 64,
    frameOfReference: '1.2.3', multiFrameWithoutGeometry: false,
  });
  const perFrame = (z) => ({ '00209113': v({ '00200032': v(0, 0, z) }) });
  const enhanced = {
    '00280008': v(3), '00280010': v(64), '00280011': v(64),
    '52009229': v({ '00209116': v({ '00200037': v(...AXIAL) }), '00289110': v({ '00280030': v(0.5, 0.5) }) }),
    '52009230': v(perFrame(0), perFrame(1), perFrame(2)),
  };
  const frames = [1, 2, 3].map((f) => frameGeometry(enhanced, f));
  assert.deepEqual(frames[2].position, [0, 0, 2]);
  assert.deepEqual(frames[2].pixelSpacing, [0.5, 0.5]);
  assert.equal(checkVolume('CT', frames).ok, true);
  const cine = { '00280008': v(30), '00280010': v(64), '00280011': v(64), '00200032': v(0, 0, 0) };
  const r = checkVolume('CT', Array.from({ length: 30 }, (_, k) => frameGeometry(cine, k + 1)));
  assert.equal(r.reason, 'multiFrame');
});
