import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Figure } from '../../bench/lib/figure';
import { END, START, syncReadme } from '../../bench/lib/readme';
import { changesSection, figureCharts, figureSection, writeReport } from '../../bench/lib/report';
import { comparisonSvg } from '../../bench/lib/svg';

/** Tags balance and nest, attribute values are quoted, text holds no raw `<` or bare `&`. */
function assertWellFormed(xml: string): void {
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let at = 0;
  for (let m = tag.exec(xml); m; m = tag.exec(xml)) {
    const between = xml.slice(at, m.index);
    expect(between, `text before ${m[0]}`).not.toMatch(/<|&(?!(#\d+|amp|lt|gt|quot|apos);)/);
    at = m.index + m[0].length;
    const [, close, name, , selfClosing] = m;
    if (close) expect(stack.pop(), `closing ${name}`).toBe(name);
    else if (!selfClosing) stack.push(name);
  }
  expect(xml.slice(at).trim()).toBe('');
  expect(stack).toEqual([]);
}

function count(s: string, re: RegExp): number {
  return s.match(re)?.length ?? 0;
}

/** Three rounds of two variants, one of them with characters XML must escape. */
function figure(): Figure {
  const fig = new Figure('1. Datapath: local pod-to-pod delivery, ns/packet');
  const kelp = [124, 141, 122];
  const ref = [69, 74, 68];
  kelp.forEach((v, i) => {
    fig.record('local delivery', 'kelp_from_pod', 'ns/packet', v);
    fig.record('local delivery', 'redirect <ref> & co', 'ns/packet', ref[i]);
  });
  fig.compare('local delivery', 'kelp_from_pod', 'redirect <ref> & co', 'lower');
  return fig;
}

describe('comparison chart', () => {
  const [c] = figure().comparisons();
  const svg = comparisonSvg(c, '1. Datapath');

  it('has two bars and one ratio point per round', () => {
    expect(count(svg, /<rect class="bar num"/g)).toBe(3);
    expect(count(svg, /<rect class="bar den"/g)).toBe(3);
    expect(count(svg, /<circle class="ratio"/g)).toBe(3);
  });

  it('labels the chart: title, unit, direction, medians, rounds', () => {
    expect(svg).toContain('local delivery (ns/packet): kelp_from_pod vs redirect &#60;ref&#62; &#38; co');
    expect(svg).toContain('lower is better');
    expect(svg).toContain('>ns/packet</text>');
    expect(svg).toContain('>median 124</text>');
    expect(svg).toContain('>median 69.0</text>');
    expect(svg).toContain(`>median ${(124 / 69).toFixed(2)}×</text>`);
    for (const r of ['1', '2', '3']) expect(svg).toContain(`>${r}</text>`);
    expect(svg).toContain('>round</text>');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="640" /);
    expect(svg).toContain('font-family="Helvetica, Arial, sans-serif"');
  });

  it('is well-formed XML', () => {
    assertWellFormed(svg);
  });

  it('draws a taller bar for a larger value', () => {
    const heights = [...svg.matchAll(/<rect class="bar num"[^>]* height="([\d.]+)"/g)].map((m) => Number(m[1]));
    expect(heights[1]).toBeGreaterThan(heights[0]);
    expect(heights[0]).toBeGreaterThan(heights[2]);
  });
});

describe('report with charts and changes', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kelp-bench-report-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes one SVG per comparison beside the report, each linked under its figure', () => {
    const fig = figure();
    fig.record('other', 'a', 'ms', 1);
    fig.record('other', 'b', 'ms', 2);
    fig.compare('other', 'a', 'b', 'higher');
    const charts = figureCharts(fig, '2026-11-30-datapath');
    expect(charts.map((c) => c.file)).toEqual([
      '2026-11-30-datapath/1-local-delivery-kelp-from-pod-vs-redirect-ref-co.svg',
      '2026-11-30-datapath/1-other-a-vs-b.svg',
    ]);
    const section = figureSection(fig, charts);
    expect(section.indexOf('![local delivery: kelp_from_pod ÷ redirect <ref> & co](2026-11-30-datapath/1-local-delivery')).toBeGreaterThan(section.indexOf('| local delivery'));
    mkdirSync(path.join(dir, '2026-11-30-datapath'));
    writeFileSync(path.join(dir, '2026-11-30-datapath', 'stale.svg'), '<svg/>');
    const file = writeReport(dir, '2026-11-30-datapath', section, charts);
    expect(file).toBe(path.join(dir, '2026-11-30-datapath.md'));
    const links = [...readFileSync(file, 'utf8').matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
    expect(links).toHaveLength(2);
    for (const l of links) assertWellFormed(readFileSync(path.join(dir, l), 'utf8'));
    expect(existsSync(path.join(dir, '2026-11-30-datapath', 'stale.svg'))).toBe(false);
  });

  it('includes bench/CHANGES.md without its format comment', () => {
    const changes = path.join(dir, 'CHANGES.md');
    writeFileSync(changes, '<!--\nformat: ### title\n-->\n### A change (abc1234)\n- Before → after: 2 → 1 ms\n');
    expect(changesSection(changes)).toBe(
      '## What each change bought\n\nFrom bench/CHANGES.md, kept by hand: each change that moved a figure, and the runs that show it.\n\n' +
        '### A change (abc1234)\n- Before → after: 2 → 1 ms\n',
    );
    const real = changesSection();
    expect(real).not.toContain('<!--');
    expect(real).toMatch(/\n### .+\n- Why: /);
  });
});

describe('README sync', () => {
  let dir: string;
  let readme: string;
  let report: string;
  const before = `# kelp\n\nIntro.\n\n${START}\nold table\n${END}\n\nAfter the block.\n`;
  const run = (full: boolean) => ({ full, report, headline: '| figure | kelp |\n|---|---|\n| x | 1 ms |\n', machine: 'AMD EPYC, 2 CPUs' });

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kelp-bench-readme-'));
    readme = path.join(dir, 'README.md');
    report = path.join(dir, 'bench', 'results', '2026-11-30.md');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('replaces only the marked block on a full run', () => {
    writeFileSync(readme, before);
    expect(syncReadme(readme, run(true))).toBe(true);
    const after = readFileSync(readme, 'utf8');
    expect(after.startsWith(`# kelp\n\nIntro.\n\n${START}\n`)).toBe(true);
    expect(after.endsWith(`\n${END}\n\nAfter the block.\n`)).toBe(true);
    expect(after).not.toContain('old table');
    expect(after).toContain('[`bench/results/2026-11-30.md`](bench/results/2026-11-30.md)');
    expect(after).toContain('Machine: AMD EPYC, 2 CPUs.');
    expect(after).toContain('| x | 1 ms |\n');
    // A second run rewrites the same block, not a new one.
    expect(syncReadme(readme, run(true))).toBe(true);
    expect(readFileSync(readme, 'utf8')).toBe(after);
  });

  it('refuses a README without both markers, in order, once each', () => {
    for (const text of ['# kelp\nno markers\n', `${START}\nonly the start\n`, `${END}\n${START}\n`, `${START}\n${END}\n${START}\n${END}\n`]) {
      writeFileSync(readme, text);
      expect(() => syncReadme(readme, run(true))).toThrow(/needs exactly one "<!-- bench:start -->" line followed by one "<!-- bench:end -->"/);
      expect(readFileSync(readme, 'utf8')).toBe(text);
    }
  });

  it('leaves the README alone after a partial run, markers or not', () => {
    for (const text of [before, '# kelp\nno markers\n']) {
      writeFileSync(readme, text);
      expect(syncReadme(readme, run(false))).toBe(false);
      expect(readFileSync(readme, 'utf8')).toBe(text);
    }
  });

  it('leaves the README alone when the report is outside its tree', () => {
    writeFileSync(readme, before);
    report = path.join(tmpdir(), 'elsewhere', '2026-11-30.md');
    expect(syncReadme(readme, run(true))).toBe(false);
    expect(readFileSync(readme, 'utf8')).toBe(before);
  });
});
