// A figure collects one value per round for each (measure, variant) and renders one table:
// median and min–max over rounds, the per-round values, and comparisons as per-round ratios
// (variants of one round ran under the same machine load, so their ratio is what carries over
// between runs; absolute numbers drift with the machine).
import { num, ratio, Spread, spread } from './stats';

export type Better = 'lower' | 'higher';

export interface Table {
  headers: string[];
  rows: string[][];
}

interface SeriesRow {
  kind: 'series';
  measure: string;
  variant: string;
  unit: string;
  values: number[];
}

/** A ratio row with the values it is computed from, for its chart. */
export interface Comparison {
  measure: string;
  num: string;
  den: string;
  better: Better;
  unit: string;
  numValues: number[];
  denValues: number[];
  ratios: number[];
}

interface RatioRow {
  kind: 'ratio';
  measure: string;
  num: string;
  den: string;
  better: Better;
}

export class Figure {
  readonly notes: string[] = [];
  private readonly rows: Array<SeriesRow | RatioRow> = [];

  constructor(readonly title: string) {}

  record(measure: string, variant: string, unit: string, value: number): void {
    let row = this.find(measure, variant);
    if (!row) {
      row = { kind: 'series', measure, variant, unit, values: [] };
      this.rows.push(row);
    }
    row.values.push(value);
  }

  /** Adds a ratio row num ÷ den, computed round by round when rendered. */
  compare(measure: string, numVariant: string, denVariant: string, better: Better): void {
    this.rows.push({ kind: 'ratio', measure, num: numVariant, den: denVariant, better });
  }

  values(measure: string, variant: string): number[] {
    const row = this.find(measure, variant);
    if (!row) throw new Error(`${this.title}: no values for ${measure} / ${variant}`);
    return row.values;
  }

  unit(measure: string, variant: string): string {
    return this.find(measure, variant)?.unit ?? '';
  }

  ratios(measure: string, numVariant: string, denVariant: string): number[] {
    const a = this.values(measure, numVariant);
    const b = this.values(measure, denVariant);
    if (a.length !== b.length) throw new Error(`${this.title}: ${measure} has ${a.length} rounds of ${numVariant}, ${b.length} of ${denVariant}`);
    return a.map((x, i) => x / b[i]);
  }

  /** The ratio rows in table order. */
  comparisons(): Comparison[] {
    const measures = [...new Set(this.rows.map((r) => r.measure))];
    return measures.flatMap((m) =>
      this.rows
        .filter((r): r is RatioRow => r.measure === m && r.kind === 'ratio')
        .map((r) => ({
          measure: r.measure,
          num: r.num,
          den: r.den,
          better: r.better,
          unit: this.unit(r.measure, r.num),
          numValues: this.values(r.measure, r.num),
          denValues: this.values(r.measure, r.den),
          ratios: this.ratios(r.measure, r.num, r.den),
        })),
    );
  }

  /** Rows grouped by measure (first-seen order), each group's ratios after its values. */
  table(): Table {
    const measures = [...new Set(this.rows.map((r) => r.measure))];
    const ordered = measures.flatMap((m) => [
      ...this.rows.filter((r) => r.measure === m && r.kind === 'series'),
      ...this.rows.filter((r) => r.measure === m && r.kind === 'ratio'),
    ]);
    const rows = ordered.map((r) => {
      if (r.kind === 'series') return [`${r.measure} (${r.unit})`, r.variant, ...cells(r.values, num)];
      const rs = this.ratios(r.measure, r.num, r.den);
      return [`${r.measure}: ratio, ${r.better} is better`, `${r.num} ÷ ${r.den}`, ...cells(rs, ratio)];
    });
    return { headers: ['measure', 'variant', 'median', 'min – max', 'per round'], rows };
  }

  private find(measure: string, variant: string): SeriesRow | undefined {
    return this.rows.find((r): r is SeriesRow => r.kind === 'series' && r.measure === measure && r.variant === variant);
  }
}

function cells(xs: number[], fmt: (x: number) => string): string[] {
  const s = spread(xs);
  return [fmt(s.median), `${fmt(s.min)} – ${fmt(s.max)}`, xs.map(fmt).join(' ')];
}

export function spreadText(s: Spread, unit: string, fmt: (x: number) => string = num): string {
  return `${fmt(s.median)}${unit ? ` ${unit}` : ''} (${fmt(s.min)}–${fmt(s.max)})`;
}

/** One line of the headline table: kelp, the reference and their per-round ratio. */
export interface HeadlineRow {
  figure: string;
  kelp: string;
  reference: string;
  ratio: string;
}

export function headlineRow(fig: Figure, label: string, measure: string, kelp: string, vs?: { reference: string; better: Better }): HeadlineRow {
  const unit = fig.unit(measure, kelp);
  const k = spreadText(spread(fig.values(measure, kelp)), unit);
  if (!vs) return { figure: label, kelp: k, reference: '—', ratio: '—' };
  return {
    figure: label,
    kelp: k,
    reference: spreadText(spread(fig.values(measure, vs.reference)), unit),
    ratio: `${spreadText(spread(fig.ratios(measure, kelp, vs.reference)), '', ratio)}, ${vs.better} is better`,
  };
}
