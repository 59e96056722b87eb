// Client-side navigation between the viewer's pages. `main.ts` installs the
// route handler; everything else calls `navigate`.

let handler: () => void = () => {};

export function setRouteHandler(f: () => void): void {
  handler = f;
}

export function navigate(url: string): void {
  history.pushState(null, '', url);
  handler();
}

window.addEventListener('popstate', () => handler());
