// The report: a headline table, then one table per figure with a chart per comparison, then
// what each change bought (bench/CHANGES.md), as Markdown that also reads well in a terminal
// (columns padded). The same text is printed and written to bench/results, the charts beside it.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import path from 'node:path';
import { sh } from '../../src/sandbox';
import { Figure, HeadlineRow, Table } from './figure';
import { comparisonSvg } from './svg';

/** An SVG chart; `file` is relative to the report's directory, as the report links it. */
export interface Chart {
  title: string;
  file: string;
  svg: string;
}

export function markdownTable(t: Table): string {
  const all = [t.headers, ...t.rows];
  const width = t.headers.map((_, i) => Math.max(3, ...all.map((r) => [...(r[i] ?? '')].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c + ' '.repeat(width[i] - [...c].length)).join(' | ')} |`;
  return [line(t.headers), `|${width.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...t.rows.map(line)].join('\n') + '\n';
}

export function headlineTable(rows: HeadlineRow[]): Table {
  return {
    headers: ['figure', 'kelp', 'reference', 'kelp ÷ reference (per round)'],
    rows: rows.map((r) => [r.figure, r.kelp, r.reference, r.ratio]),
  };
}

export function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 80).replace(/^-+|-+$/g, '');
}

/** One chart per comparison of the figure, as `<dir>/<slug>.svg`; the figure's number keeps slugs apart between figures. */
export function figureCharts(fig: Figure, dir: string): Chart[] {
  const prefix = /^\d+/.exec(fig.title)?.[0] ?? fig.title;
  const taken = new Set<string>();
  return fig.comparisons().map((c) => {
    const base = slug(`${prefix} ${c.measure} ${c.num} vs ${c.den}`);
    let name = base;
    for (let i = 2; taken.has(name); i++) name = `${base}-${i}`;
    taken.add(name);
    return { title: `${c.measure}: ${c.num} ÷ ${c.den}`, file: `${dir}/${name}.svg`, svg: comparisonSvg(c, fig.title) };
  });
}

export function figureSection(fig: Figure, charts: Chart[] = []): string {
  // A blank line between notes (and between images) keeps each its own paragraph in Markdown.
  const notes = fig.notes.map((n) => `${n}\n\n`).join('');
  const images = charts.map((c) => `\n![${c.title.replace(/[[\]]/g, '')}](${c.file})\n`).join('');
  return `## ${fig.title}\n\n${notes}${markdownTable(fig.table())}${images}`;
}

const CHANGES = path.join(__dirname, '../CHANGES.md');

/** bench/CHANGES.md as a section, without the comment at its top that says how to write an entry. */
export function changesSection(file = CHANGES): string {
  const body = existsSync(file) ? readFileSync(file, 'utf8').replace(/^\s*<!--[\s\S]*?-->\s*/, '').trim() : `(${file} is missing)`;
  return `## What each change bought\n\nFrom bench/CHANGES.md, kept by hand: each change that moved a figure, and the runs that show it.\n\n${body}\n`;
}

/** Machine and run facts that make a report comparable with another one. */
export function environment(config: Record<string, unknown>): string[] {
  const commit = sh('git', ['-C', path.join(__dirname, '../..'), 'rev-parse', '--short', 'HEAD'], { allowFail: true }).trim() || 'unknown';
  return [
    `- machine: ${machine()}`,
    `- kelp commit: ${commit} (plus any uncommitted changes in the tree)`,
    `- configuration: ${Object.entries(config).map(([k, v]) => `${k}=${v}`).join(', ')}`,
  ];
}

export function machine(): string {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  return `${model}, ${cpus().length} CPUs, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}, Node ${process.version}`;
}

export function localDate(d = new Date()): string {
  const p = (n: number) => n.toString().padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** The report's name, `<date><suffix>`: a partial run passes a suffix so it never replaces a full report. */
export function reportName(suffix = ''): string {
  return `${localDate()}${suffix}`;
}

/** Writes `<name>.md` and its charts; charts left in their directory by an earlier run of the same name go. */
export function writeReport(dir: string, name: string, text: string, charts: Chart[] = []): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.md`);
  writeFileSync(file, text);
  const chartDir = path.join(dir, name);
  if (existsSync(chartDir)) for (const f of readdirSync(chartDir)) if (f.endsWith('.svg')) rmSync(path.join(chartDir, f));
  for (const c of charts) {
    mkdirSync(path.dirname(path.join(dir, c.file)), { recursive: true });
    writeFileSync(path.join(dir, c.file), c.svg);
  }
  return file;
}
