// The report: a headline table, then one table per figure, as Markdown that also reads well
// in a terminal (columns padded). The same text is printed and written to bench/results.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import path from 'node:path';
import { sh } from '../../src/sandbox';
import { Figure, HeadlineRow, Table } from './figure';

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

export function figureSection(fig: Figure): string {
  // A blank line between notes keeps each its own paragraph in Markdown.
  const notes = fig.notes.map((n) => `${n}\n\n`).join('');
  return `## ${fig.title}\n\n${notes}${markdownTable(fig.table())}`;
}

/** Machine and run facts that make a report comparable with another one. */
export function environment(config: Record<string, unknown>): string[] {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  const commit = sh('git', ['-C', path.join(__dirname, '../..'), 'rev-parse', '--short', 'HEAD'], { allowFail: true }).trim() || 'unknown';
  return [
    `- machine: ${model}, ${cpus().length} CPUs, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}, Node ${process.version}`,
    `- kelp commit: ${commit} (plus any uncommitted changes in the tree)`,
    `- configuration: ${Object.entries(config).map(([k, v]) => `${k}=${v}`).join(', ')}`,
  ];
}

export function localDate(d = new Date()): string {
  const p = (n: number) => n.toString().padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** Writes `<date><suffix>.md`; a partial run passes a suffix so it never replaces a full report. */
export function writeReport(dir: string, text: string, suffix = ''): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${localDate()}${suffix}.md`);
  writeFileSync(file, text);
  return file;
}
