// Unit tests of src/reader/hanging/plan.ts (hanging protocols: which
// protocol fits, which series goes where), under Node's test runner.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { importTs } from '../test-support/ts.mjs';

const { chooseProtocol, place, priorFits, orientationOf } = await importTs('src/reader/hanging/plan.ts');
const builtIn = JSON.parse(readFileSync(new URL('../../src/hanging_protocols.json', import.meta.url), 'utf8'));

const s = (description, orientation = 'axial', modality = 'CT', bodyPart = 'CHEST') => ({ modality, description, bodyPart, orientation });

test('orientation from Image Orientation (Patient)', () => {
  assert.equal(orientationOf([1, 0, 0, 0, 1, 0]), 'axial');
  assert.equal(orientationOf([0, 1, 0, 0, 0, -1]), 'sagittal');
  assert.equal(orientationOf([1, 0, 0, 0, 0, -1]), 'coronal');
  assert.equal(orientationOf([1, 0, 0, 0, 0.97, 0.26]), 'axial');
  assert.equal(orientationOf(undefined), undefined);
});

test('the built-in CT chest protocol: soft tissue left, lung right, the prior below', () => {
  const p = chooseProtocol(builtIn, 'CT', 'chest');
  assert.equal(p.id, 'ct-chest');
  const current = [s('Lung 1 mm'), s('Coronal soft', 'coronal'), s('Soft tissue 2 mm'), s('Scout', undefined)];
  const prior = [s('Mediastinum 5 mm'), s('Lung 5 mm')];
  assert.ok(priorFits(p, prior));
  assert.deepEqual(place(p, current, prior), [
    { study: 'current', series: 2, window: 'mediastinum' },
    { study: 'current', series: 0, window: 'lung' },
    { study: 'prior', series: 0, window: 'mediastinum' },
    { study: 'prior', series: 1, window: 'lung' },
  ]);
  // Without a prior: the two of the current study.
  assert.equal(place(p, current, undefined).length, 2);
});

test('the built-in MR brain protocol: T1, T2, FLAIR, DWI whatever the series order', () => {
  const mr = (d) => s(d, 'axial', 'MR', 'BRAIN');
  const p = chooseProtocol(builtIn, 'MR', 'HEAD');
  assert.equal(p.id, 'mr-brain');
  const series = [mr('T2 FLAIR ax'), mr('ADC'), mr('DWI b1000'), mr('T2 TSE ax'), mr('T1 SE ax')];
  assert.deepEqual(place(p, series, undefined).map((x) => x.series), [4, 3, 0, 2]);
});

test('no protocol for other modalities or body parts; priors of another body part do not fit', () => {
  assert.equal(chooseProtocol(builtIn, 'CT', 'HEAD'), undefined);
  assert.equal(chooseProtocol(builtIn, 'US', 'CHEST'), undefined);
  assert.equal(chooseProtocol({ version: 2, protocols: builtIn.protocols }, 'CT', 'CHEST'), undefined);
  const p = chooseProtocol(builtIn, 'CT', 'CHEST');
  assert.equal(priorFits(p, [s('Soft', 'axial', 'CT', 'ABDOMEN')]), false);
});

test('an edited protocol: the current soft tissue beside the prior one, two viewports', () => {
  const edited = {
    version: 1,
    protocols: [
      { id: 'ct-any', modality: 'CT', viewports: [{ study: 'current', description: 'brain' }] },
      {
        id: 'ct-chest-side-by-side',
        modality: 'CT',
        bodyParts: ['CHEST'],
        viewports: [
          { study: 'current', orientation: 'axial', description: 'soft', window: 'mediastinum' },
          { study: 'prior', orientation: 'axial', description: 'mediast', window: 'mediastinum' },
        ],
      },
    ],
  };
  // The first protocol that matches wins: one without body parts fits any.
  assert.equal(chooseProtocol(edited, 'ct', 'CHEST').id, 'ct-any');
  const p = chooseProtocol({ version: 1, protocols: edited.protocols.slice(1) }, 'CT', 'CHEST');
  const current = [s('Lung 1 mm'), s('Coronal soft tissue', 'coronal'), s('Soft tissue 2 mm')];
  const prior = [s('Mediastinum 5 mm'), s('Lung 5 mm')];
  assert.deepEqual(place(p, current, prior), [
    { study: 'current', series: 2, window: 'mediastinum' },
    { study: 'prior', series: 0, window: 'mediastinum' },
  ]);
  // A series is placed once; an orientation that nothing has leaves the viewport out.
  const twice = { ...p, viewports: [p.viewports[0], p.viewports[0], { study: 'current', orientation: 'sagittal' }] };
  assert.deepEqual(place(twice, current, prior), [{ study: 'current', series: 2, window: 'mediastinum' }]);
  // An expression that does not compile matches nothing (the rest still applies).
  const broken = { ...p, viewports: [{ study: 'current', description: '(' }, p.viewports[1]] };
  assert.deepEqual(place(broken, current, prior), [{ study: 'prior', series: 0, window: 'mediastinum' }]);
});
