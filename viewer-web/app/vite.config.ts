import { defineConfig, type Plugin } from 'vite';
import { viewerPage } from './vite-viewer-page';

// Cornerstone's core imports vtk.js's surface-mesh file readers (PLY, STL,
// OBJ/MTL, VTP) for its mesh geometry loader, which this viewer never uses;
// the VTP reader alone brings an XML library and a YAML parser, about 0.6 MB
// of script that the first image would otherwise wait for (see
// ARCHITECTURE.md, viewer). Those imports, from core's two mesh modules
// only, resolve to a stub that refuses to read a mesh.
const NO_MESH_READER = '\0sen-no-mesh-reader';
function noMeshReaders(): Plugin {
  return {
    name: 'sen-no-mesh-readers',
    enforce: 'pre',
    resolveId(source, importer) {
      if (
        source.startsWith('@kitware/vtk.js/IO/') &&
        importer &&
        /@cornerstonejs[\\/]core[\\/]dist[\\/]esm[\\/](cache[\\/]classes[\\/]Mesh|loaders[\\/]utils[\\/]mesh[\\/]createMesh)\.js$/.test(importer)
      ) {
        return NO_MESH_READER;
      }
      return null;
    },
    load(id) {
      if (id !== NO_MESH_READER) return null;
      return "export default { newInstance() { throw new Error('surface meshes are not read by this viewer'); } };";
    },
  };
}

// The viewer is served by the `pacs` binary at `/`; in development `vite`
// proxies the archive's API to a running server (PACS_URL, default :8080).
const pacs = process.env.PACS_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: '/',
  plugins: [noMeshReaders(), viewerPage()],

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
