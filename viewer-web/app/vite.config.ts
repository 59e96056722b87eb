import { defineConfig } from 'vite';
import { viewerPage } from './vite-viewer-page';

// The viewer is served by the `pacs` binary at `/`; in development `vite`
// proxies the archive's API to a running server (PACS_URL, default :8080).
const pacs = process.env.PACS_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  plugins: [viewerPage()],

  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  worker: { format: 'es' },
  build: {
    outDir: process.env.VIEWER_OUT_DIR ?? 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4096,
  },
  server: {
    proxy: {
      '/dicom-web': pacs,
      '/api': pacs,
      '/wado': pacs,
    },
  },
});
