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
