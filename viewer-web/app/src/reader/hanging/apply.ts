// Hanging protocols, the reading view's part: fetches the protocols, finds
// the study's most recent relevant prior and returns where each series goes.
// Loaded on demand after the first image (dynamic import).

import { str } from '../../dicomweb';
import { loadSeries, loadStudy, otherStudies, type SeriesInfo, type StudyInfo } from '../study';
import { chooseProtocol, orientationOf, type Placement, place, priorFits, type Protocols, type SeriesFacts } from './plan';

/** Priors looked at, newest first, for one that fits. */
const MAX_PRIORS_TRIED = 3;

export interface Hanging {
  protocolId: string;
  prior: StudyInfo | undefined;
  /** Viewport by viewport: the series and the CT window preset. */
  viewports: { series: SeriesInfo; window?: string }[];
}

function numbers(ds: Record<string, { Value?: unknown[] } | undefined> | undefined, tag: string): number[] | undefined {
  const v = ds?.[tag]?.Value;
  return Array.isArray(v) ? v.map(Number) : undefined;
}

async function facts(study: StudyInfo): Promise<SeriesFacts[]> {
  const series = await Promise.all(study.series.map((s) => loadSeries(s).catch(() => s)));
  return series.map((s) => {
    const ds = s.frames[0]?.instance;
    return {
      modality: s.modality,
      description: s.description,
      bodyPart: str(ds, '00180015'),
      orientation: orientationOf(numbers(ds, '00200037')),
    };
  });
}

async function protocols(): Promise<Protocols | undefined> {
  const r = await fetch('/api/v1/hanging-protocols', { headers: { Accept: 'application/json' } });
  if (!r.ok) {
    console.warn(`hanging protocols: ${r.status} ${await r.text()}`);
    return undefined;
  }
  return (await r.json()) as Protocols;
}

/** The layout a protocol gives `study`, or nothing when none fits or it would fill fewer than two viewports. */
export async function hang(study: StudyInfo): Promise<Hanging | undefined> {
  const [all, current] = await Promise.all([protocols(), facts(study)]);
  const first = current.find((s) => s.bodyPart) ?? current[0];
  if (!first) return undefined;
  const protocol = chooseProtocol(all, first.modality, first.bodyPart);
  if (!protocol) return undefined;
  let prior: StudyInfo | undefined;
  let priorFacts: SeriesFacts[] | undefined;
  if (protocol.viewports.some((v) => v.study === 'prior')) {
    const candidates = (await otherStudies(study))
      .filter((o) => o.date <= study.date && o.modalities.split('/').includes(protocol.modality))
      .slice(0, MAX_PRIORS_TRIED);
    for (const c of candidates) {
      const loaded = await loadStudy(c.uid);
      const f = await facts(loaded);
      if (priorFits(protocol, f)) {
        prior = loaded;
        priorFacts = f;
        break;
      }
    }
  }
  const placed: Placement[] = place(protocol, current, priorFacts);
  if (placed.length < 2) return undefined;
  return {
    protocolId: protocol.id,
    prior,
    viewports: placed.map((p) => ({
      series: (p.study === 'prior' && prior ? prior : study).series[p.series],
      window: p.window,
    })),
  };
}
