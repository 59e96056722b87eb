/* OHIF Viewer configuration used by tests/ohif/run.sh.
 *
 * The static server in tests/ohif/check.mjs serves OHIF and forwards /dicom-web and /wado to the
 * Sen PACS server, so OHIF talks to its own origin (no CORS needed) and the URLs the archive
 * writes into its answers (RetrieveURL, BulkDataURI), which it derives from the Host header,
 * point back at the same origin. Served in place of OHIF's own dist/app-config.js. With
 * OHIF_ARCHIVE=direct, check.mjs sets window.senPacsArchive to the archive's own origin, to try
 * OHIF against it cross-origin.
 */
const senPacsArchive = window.senPacsArchive || window.location.origin;
window.config = {
  name: 'sen-pacs',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumRequests: {
    interaction: 100,
    thumbnail: 5,
    prefetch: 10,
  },
  showErrorDetails: 'always',
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'senpacs',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'senpacs',
      configuration: {
        friendlyName: 'Sen PACS',
        name: 'senpacs',
        wadoUriRoot: senPacsArchive + '/wado',
        qidoRoot: senPacsArchive + '/dicom-web',
        wadoRoot: senPacsArchive + '/dicom-web',
        qidoSupportsIncludeField: true,
        supportsReject: false,
        dicomUploadEnabled: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: {
          enabled: true,
        },
      },
    },
  ],
};
