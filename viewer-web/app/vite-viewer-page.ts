// Writes `viewer.html`: the app's page with `<link rel="preload">` for the
// reading view's chunk, the chunks it imports and its CSS. They are fetched
// with the page but neither compiled nor applied: `modulepreload` had the
// browser compile the 2.6 MB core chunk on the page's only thread as soon as
// it arrived (300 ms on a loaded machine), and a stylesheet in the head holds
// back the entry script; either could come before the boot code
// (src/boot.ts) had asked for the first image. The reader's dynamic import
// then takes them from the preload cache. The script preloads are of low
// priority, so that on a slow link the boot code's own requests (entry,
// series list, first image) are not queued behind 0.8 MB of them. The tools' chunk
// (src/reader/tools.ts) and the chunks it imports are named in
// `<meta name="sen-preload-later">`: the reader adds their `modulepreload`
// links when its first image is drawn, before it asks for the other slices
// (so that the tools do not wait behind hundreds of image requests), and not
// with the page (more preloads at once would hold back the boot preview's
// request on a slow link). The server answers `/viewer` with it, so a cold
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
        ...[...styles].filter(fresh).map((f) => `<link rel="preload" as="style" href="/${f}" />`),
        ...scripts.filter(fresh).map((f) => `<link rel="preload" as="script" fetchpriority="low" crossorigin href="/${f}" />`),
      ].join('\n    ');
      if (!page.includes('</head>')) throw new Error('sen-viewer-page: index.html has no </head>');
      writeFileSync(join(dir, 'viewer.html'), page.replace('</head>', `  ${links}\n  </head>`));
    },
  };
}
