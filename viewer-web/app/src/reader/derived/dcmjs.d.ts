// The small part of dcmjs (MIT) the derived-object modules use; dcmjs ships
// no type declarations.
declare module 'dcmjs' {
  /** A naturalized data set: keywords as keys, sequences as arrays of data sets. */
  export type Naturalized = Record<string, unknown>;
  export namespace data {
    class DicomDict {
      constructor(meta: Record<string, unknown>);
      meta: Record<string, unknown>;
      dict: Record<string, unknown>;
      write(options?: Record<string, unknown>): ArrayBuffer;
    }
    const DicomMessage: {
      readFile(buffer: ArrayBuffer, options?: Record<string, unknown>): DicomDict;
    };
    const DicomMetaDictionary: {
      naturalizeDataset(ds: Record<string, unknown>): Naturalized;
      denaturalizeDataset(ds: Naturalized): Record<string, unknown>;
      uid(): string;
    };
  }
  const dcmjs: { data: typeof data };
  export default dcmjs;
}
