// The README's benchmark block is the latest full run's headline, rewritten by `make bench` so
// the README cannot drift from the reports. Only the text between the markers is ours; a partial
// run, or one whose report lies outside the repository (BENCH_OUT=/tmp/...), leaves it alone.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const README = path.join(__dirname, '../../README.md');
export const START = '<!-- bench:start -->';
export const END = '<!-- bench:end -->';

export interface ReadmeRun {
  /** Every figure ran (no BENCH_ONLY subset). */
  full: boolean;
  /** The report just written (absolute, or relative to the working directory). */
  report: string;
  /** The headline table, Markdown. */
  headline: string;
  /** The machine the run was on, one line. */
  machine: string;
}

export function readmeBlock(run: ReadmeRun, link: string): string {
  return [
    '<!-- Written by make bench (bench/lib/readme.ts) on every full run: edit outside the markers. -->',
    `Latest full run: [\`${link}\`](${link}), with every figure's table and a chart per comparison. ` +
      'Medians over rounds with min–max; ratios are kelp ÷ reference taken round by round (both ran in the same ' +
      'round, under the same load) and then summarised.',
    '',
    `Machine: ${run.machine}.`,
    '',
    run.headline.trimEnd(),
  ].join('\n');
}

/** Replaces the marked block of `readme` after a full run; returns whether it wrote. */
export function syncReadme(readme: string, run: ReadmeRun): boolean {
  if (!run.full) return false;
  const link = path.relative(path.dirname(path.resolve(readme)), path.resolve(run.report)).split(path.sep).join('/');
  if (link.startsWith('../') || path.isAbsolute(link)) return false;
  const text = readFileSync(readme, 'utf8');
  const count = (m: string) => text.split(m).length - 1;
  const start = text.indexOf(START);
  const end = text.indexOf(END);
  if (count(START) !== 1 || count(END) !== 1 || end < start) {
    throw new Error(`${readme}: needs exactly one "${START}" line followed by one "${END}" line around the benchmark block; not rewriting it`);
  }
  writeFileSync(readme, `${text.slice(0, start + START.length)}\n${readmeBlock(run, link)}\n${text.slice(end)}`);
  return true;
}

/** The markers of a figure's own block, e.g. `<!-- bench:policy:start -->`. */
export function figureMarkers(key: string): { start: string; end: string } {
  return { start: `<!-- bench:${key}:start -->`, end: `<!-- bench:${key}:end -->` };
}

export interface ReadmeFigureRun {
  /** The figure's title, as its report section has it. */
  title: string;
  /** BENCH_ONLY value that runs it alone. */
  only: string;
  report: string;
  /** Its headline rows, Markdown. */
  headline: string;
  machine: string;
}

/**
 * Replaces a figure's own marked block after any run that measured it, full or partial: a figure
 * that costs minutes is run alone far more often than the whole set. Returns whether it wrote;
 * a README without the markers, or a report outside the repository, is left alone.
 */
export function syncReadmeFigure(readme: string, key: string, run: ReadmeFigureRun): boolean {
  const { start: s, end: e } = figureMarkers(key);
  const link = path.relative(path.dirname(path.resolve(readme)), path.resolve(run.report)).split(path.sep).join('/');
  if (link.startsWith('../') || path.isAbsolute(link)) return false;
  const text = readFileSync(readme, 'utf8');
  const start = text.indexOf(s);
  const end = text.indexOf(e);
  if (start < 0 || end < start || text.split(s).length !== 2 || text.split(e).length !== 2) return false;
  const block = [
    '<!-- Written by make bench (bench/lib/readme.ts) on every run of this figure: edit outside the markers. -->',
    `${run.title}: latest run [\`${link}\`](${link}) (\`BENCH_ONLY=${run.only}\` runs it alone). Machine: ${run.machine}.`,
    '',
    run.headline.trimEnd(),
  ].join('\n');
  writeFileSync(readme, `${text.slice(0, start + s.length)}\n${block}\n${text.slice(end)}`);
  return true;
}
