// Writes `viewer.html`: the app's page with `<link rel="modulepreload">` for
// the reading view's chunk and the chunks it imports, and a stylesheet
// preload for its CSS. The tools' chunk (src/reader/tools.ts) and the chunks
// it imports are named in `<meta name="sen-preload-later">`: the reader adds
// their `modulepreload` links when its first image is drawn, before it asks
// for the other slices (so that the tools do not wait behind hundreds of
// image requests), and not with the page (more preloads at once would hold
// back the boot preview's request on a slow link). The server answers `/viewer` with it, so a cold
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
      const before = scripts.length;
      visit(tools.fileName);
      const later = scripts.splice(before);
      const page = readFileSync(join(dir, 'index.html'), 'utf8');
      // What the page names already (the entry and its CSS) is not repeated.
      const fresh = (f: string) => !page.includes(`"/${f}"`);
      const links = [
        `<meta name="sen-preload-later" content="${later.map((f) => `/${f}`).join(' ')}" />`,
        ...[...styles].filter(fresh).map((f) => `<link rel="stylesheet" href="/${f}" />`),
        ...scripts.filter(fresh).map((f) => `<link rel="modulepreload" crossorigin href="/${f}" />`),
      ].join('\n    ');
      if (!page.includes('</head>')) throw new Error('sen-viewer-page: index.html has no </head>');
      writeFileSync(join(dir, 'viewer.html'), page.replace('</head>', `  ${links}\n  </head>`));
    },
  };
}
