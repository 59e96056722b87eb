// Entry of the viewer: a small router between the study list (`/`) and the
// reading view (`/viewer?StudyInstanceUIDs=...`, the OHIF-compatible link).

import './styles.css';
import { mountStudyList } from './list/index';
import { mountReader } from './reader/index';
import { setRouteHandler } from './router';

const app = document.getElementById('app') as HTMLElement;

function route(): void {
  app.replaceChildren();
  const { pathname, searchParams } = new URL(location.href);
  if (pathname === '/viewer' || pathname.startsWith('/viewer/')) {
    mountReader(app, searchParams);
  } else {
    mountStudyList(app);
  }
}

setRouteHandler(route);
route();
