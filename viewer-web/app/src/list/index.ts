import { navigate } from '../router';

/** The study list (placeholder until built). */
export function mountStudyList(root: HTMLElement): void {
  const a = document.createElement('a');
  a.textContent = 'viewer';
  a.href = '/viewer';
  a.onclick = (e) => { e.preventDefault(); navigate('/viewer'); };
  root.append(a);
}
