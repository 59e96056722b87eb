// Writes `viewer.html`: the app's page with `<link rel="modulepreload">` for
// the reading view's chunk and the chunks it imports, and a stylesheet
// preload for its CSS; then the same for the tools' chunk (src/reader/tools.ts,
// imported after the first image: fetched with the page, run only then, so
// that it does not wait behind the slices' requests). The server answers `/viewer` with it, so a cold
// reader fetches its code while the entry script is still arriving instead
// of one round trip after it; the study list (`/`) keeps the plain page.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Plugin } from 'vite';

interface ChunkLike {
  type: 'chunk' | 'asset';
  fileName: string;
  facadeModuleId?: string | null;
  imports?: string[];
  viteMetadata?: { importedCss?: Set<string> };
}

export function viewerPage(): Plugin {
  return {
    name: 'sen-viewer-page',
    apply: 'build',
    writeBundle(options, bundle) {
      const dir = options.dir;
      if (!dir) return;
      const chunks = Object.values(bundle) as unknown as ChunkLike[];
      const reader = chunks.find(
        (c) => c.type === 'chunk' && /[\\/]src[\\/]reader[\\/]index\.ts$/.test(c.facadeModuleId ?? ''),
      );
      if (!reader) throw new Error('sen-viewer-page: no chunk for src/reader/index.ts');
      const scripts: string[] = [];
      const styles = new Set<string>();
      const visit = (name: string) => {
        if (scripts.includes(name)) return;
        const c = bundle[name] as unknown as ChunkLike | undefined;
        if (!c || c.type !== 'chunk') return;
        scripts.push(name);
        c.viteMetadata?.importedCss?.forEach((css) => styles.add(css));
        c.imports?.forEach(visit);
      };
      visit(reader.fileName);
      const tools = chunks.find(
        (c) => c.type === 'chunk' && /[\\/]src[\\/]reader[\\/]tools\.ts$/.test(c.facadeModuleId ?? ''),
      );
      if (!tools) throw new Error('sen-viewer-page: no chunk for src/reader/tools.ts');
      visit(tools.fileName);
      const page = readFileSync(join(dir, 'index.html'), 'utf8');
      // What the page names already (the entry and its CSS) is not repeated.
      const fresh = (f: string) => !page.includes(`"/${f}"`);
      const links = [
        ...[...styles].filter(fresh).map((f) => `<link rel="stylesheet" href="/${f}" />`),
        ...scripts.filter(fresh).map((f) => `<link rel="modulepreload" crossorigin href="/${f}" />`),
      ].join('\n    ');
      if (!page.includes('</head>')) throw new Error('sen-viewer-page: index.html has no </head>');
      writeFileSync(join(dir, 'viewer.html'), page.replace('</head>', `  ${links}\n  </head>`));
    },
  };
}
