/** The reading view (placeholder until built). */
export function mountReader(root: HTMLElement, params: URLSearchParams): void {
  root.textContent = `studies: ${params.getAll('StudyInstanceUIDs').join(', ')}`;
}
