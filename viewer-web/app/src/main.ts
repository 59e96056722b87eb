// Entry of the viewer: a small router between the study list (`/`) and the
// reading view (`/viewer?StudyInstanceUIDs=...`, the OHIF-compatible link).
//
// The reading view (Cornerstone3D, about 3 MB of script for its first
// image, its tools and other parts in chunks loaded after it) is a separate
// chunk: the study list starts without it, and fetches it in the background
// once shown so that opening a study does not wait for it. A cold start of
// the reading view goes through boot.ts first.

import './styles.css';
import { mountStudyList } from './list/index';
import { setRouteHandler } from './router';
import { bootReader, FIRST_IMAGE_EVENT } from './boot';

type ReaderModule = typeof import('./reader/index');

const app = document.getElementById('app') as HTMLElement;
let reader: Promise<ReaderModule> | undefined;
let generation = 0;

function loadReader(): Promise<ReaderModule> {
  reader ??= import('./reader/index');
  return reader;
}

function route(): void {
  const current = ++generation;
  const { pathname, searchParams } = new URL(location.href);
  if (pathname === '/viewer' || pathname.startsWith('/viewer/')) {
    // A cold start shows the first image's preview while the reader's code
    // arrives; that code runs once the preview is on screen, and the preview
    // stays over the reader until the reader draws its first image.
    const boot = reader ? undefined : bootReader(searchParams);
    if (boot) app.replaceChildren(boot.screen);
    void (boot ? boot.ready : Promise.resolve()).then(loadReader).then((m) => {
      // A later navigation wins over a chunk that arrived late.
      if (current !== generation) return;
      app.replaceChildren();
      const started = m.mountReader(app, searchParams);
      if (!boot) return;
      boot.screen.classList.add('boot-over');
      app.append(boot.screen);
      const lift = () => boot.screen.remove();
      app.addEventListener(FIRST_IMAGE_EVENT, lift, { once: true });
      void started.finally(lift);
    }, (e: unknown) => {
      reader = undefined;
      if (current !== generation) return;
      const p = document.createElement('p');
      p.className = 'load-error';
      p.textContent = `The viewer could not be loaded (${e instanceof Error ? e.message : String(e)}). Reload the page to try again.`;
      app.replaceChildren(p);
    });
  } else {
    app.replaceChildren();
    mountStudyList(app);
    window.setTimeout(() => void loadReader().catch(() => (reader = undefined)), 1000);
  }
}

setRouteHandler(route);
route();
