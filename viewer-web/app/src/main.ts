import { init as csInit, RenderingEngine, Enums, type Types } from '@cornerstonejs/core';
import { init as dicomImageLoaderInit, wadors } from '@cornerstonejs/dicom-image-loader';

const root = '/dicom-web';

async function json(url: string): Promise<any> {
  const r = await fetch(url, { headers: { Accept: 'application/dicom+json' } });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

async function main() {
  await csInit();
  dicomImageLoaderInit({ maxWebWorkers: 1 });
  const app = document.getElementById('app')!;
  const studies = await json(`${root}/studies?ModalitiesInStudy=CT&limit=1`);
  const study = studies[0]['0020000D'].Value[0];
  const series = await json(`${root}/studies/${study}/series`);
  const se = series[0]['0020000E'].Value[0];
  const meta: any[] = await json(`${root}/studies/${study}/series/${se}/metadata`);
  const ids = meta.map((m) => {
    const sop = m['00080018'].Value[0];
    const id = `wadors:${location.origin}${root}/studies/${study}/series/${se}/instances/${sop}/frames/1`;
    wadors.metaDataManager.add(id, m);
    return id;
  });
  const el = document.createElement('div');
  el.style.width = '512px';
  el.style.height = '512px';
  app.appendChild(el);
  const engine = new RenderingEngine('main');
  engine.enableElement({ viewportId: 'vp', type: Enums.ViewportType.STACK, element: el });
  const vp = engine.getViewport('vp') as Types.IStackViewport;
  await vp.setStack(ids, 0);
  vp.render();
  document.title = `rendered ${ids.length}`;
}
main().catch((e) => { document.title = `error ${e}`; console.error(e); });
