// One chart per comparison: each round's value of the two variants as a pair of bars with their
// medians dashed across, and below them the round's ratio, so a reader sees at once how far the
// machine drifted between rounds and whether the ratio held through it. Plain SVG text, shown on
// GitHub as an image: white background, fonts named, nothing external.
import { Comparison } from './figure';
import { num, ratio, spread } from './stats';

const W = 640;
const X0 = 64; // plot area; the median labels go right of X1
const X1 = 528;
const FONT = 'Helvetica, Arial, sans-serif';
const INK = '#222';
const MUTED = '#666';
const GRID = '#e6e6e6';
const NUM = '#2f6fb0';
const DEN = '#e8912d';

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A generous guess at the width of text in the sans-serif a viewer may fall back to (DejaVu is wide). */
function textWidth(s: string, size: number, bold = false): number {
  return [...s].length * size * (bold ? 0.64 : 0.58);
}

function text(x: number, y: number, s: string, a: { size?: number; fill?: string; anchor?: 'start' | 'middle' | 'end'; weight?: string; max?: number; rotate?: boolean } = {}): string {
  // Too long for its room: a smaller font, and squeezed if even the smallest is too wide (not
  // every renderer honours textLength, so it is only the last resort).
  const bold = a.weight === 'bold';
  let size = a.size ?? 11;
  if (a.max) size = Math.max(8, Math.min(size, Math.floor((size * a.max) / textWidth(s, size, bold))));
  const attrs = [`x="${r1(x)}"`, `y="${r1(y)}"`, `font-size="${size}"`, `fill="${a.fill ?? INK}"`];
  if (a.anchor && a.anchor !== 'start') attrs.push(`text-anchor="${a.anchor}"`);
  if (a.weight) attrs.push(`font-weight="${a.weight}"`);
  if (a.max && textWidth(s, size, bold) > a.max) attrs.push(`textLength="${r1(a.max)}"`, 'lengthAdjust="spacingAndGlyphs"');
  if (a.rotate) attrs.push(`transform="rotate(-90 ${r1(x)} ${r1(y)})"`);
  return `<text ${attrs.join(' ')}>${escapeXml(s)}</text>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string, extra = ''): string {
  return `<line x1="${r1(x1)}" y1="${r1(y1)}" x2="${r1(x2)}" y2="${r1(y2)}" stroke="${stroke}"${extra ? ` ${extra}` : ''}/>`;
}

function r1(x: number): string {
  return String(Math.round(x * 10) / 10);
}

/** 1, 2 or 5 times a power of ten, at least x. */
function niceStep(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x));
  const f = x / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

function ticks(lo: number, hi: number, step: number): number[] {
  const out: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

/** Linear map of [lo, hi] onto [bottom, top] (SVG y grows downwards). */
function scale(lo: number, hi: number, bottom: number, top: number): (v: number) => number {
  return (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
}

/** Labels at the right of the plot, moved apart where their lines are too close to read. */
function rightLabels(items: Array<{ y: number; s: string; fill: string }>): string[] {
  const sorted = [...items].sort((a, b) => a.y - b.y);
  for (let i = 1; i < sorted.length; i++) sorted[i].y = Math.max(sorted[i].y, sorted[i - 1].y + 13);
  return sorted.map((l) => text(X1 + 6, l.y + 4, l.s, { fill: l.fill, max: W - X1 - 10 }));
}

export function comparisonSvg(c: Comparison, figureTitle: string): string {
  const n = c.ratios.length;
  const out: string[] = [];
  const unit = c.unit ? ` (${c.unit})` : '';
  out.push(text(16, 26, `${c.measure}${unit}: ${c.num} vs ${c.den}`, { size: 15, weight: 'bold', max: W - 32 }));
  out.push(text(16, 45, `${figureTitle} · ${n} rounds · ${c.better} is better`, { size: 12, fill: MUTED, max: W - 32 }));

  // Legend on one line when both names fit, else one line each.
  const legend = [
    { name: c.num, fill: NUM },
    { name: `${c.den} (reference)`, fill: DEN },
  ];
  const oneLine = legend.reduce((w, l) => w + 24 + textWidth(l.name, 11), 0) <= W - X0 - 16;
  let x = X0;
  let y = 66;
  for (const l of legend) {
    out.push(`<rect x="${r1(x)}" y="${y - 9}" width="12" height="10" fill="${l.fill}"/>`, text(x + 17, y, l.name, { max: W - x - 33 }));
    if (oneLine) x += 24 + textWidth(l.name, 11);
    else y += 16;
  }
  const top = (oneLine ? y : y - 16) + 22;

  // Values: bars from zero, so their heights compare honestly.
  const bottom = top + 140;
  const all = [...c.numValues, ...c.denValues];
  let lo = Math.min(0, ...all);
  let hi = Math.max(0, ...all);
  if (hi === lo) hi = lo + 1;
  const step = niceStep((hi - lo) / 4);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const vy = scale(lo, hi, bottom, top);
  for (const t of ticks(lo, hi, step)) out.push(line(X0, vy(t), X1, vy(t), GRID), text(X0 - 6, vy(t) + 4, String(t), { anchor: 'end', fill: MUTED }));
  out.push(text(18, (top + bottom) / 2, c.unit || 'value', { anchor: 'middle', fill: MUTED, rotate: true, max: bottom - top }));
  const band = (X1 - X0) / n;
  const bar = Math.min(28, band * 0.36);
  const cx = (i: number) => X0 + band * (i + 0.5);
  const bars = (vs: number[], fill: string, cls: string, dx: number) =>
    vs.forEach((v, i) => {
      const y0 = vy(0);
      const yv = vy(v);
      out.push(`<rect class="bar ${cls}" x="${r1(cx(i) + dx)}" y="${r1(Math.min(y0, yv))}" width="${r1(bar)}" height="${r1(Math.abs(y0 - yv))}" fill="${fill}"/>`);
    });
  bars(c.numValues, NUM, 'num', -bar - 1);
  bars(c.denValues, DEN, 'den', 1);
  const mNum = spread(c.numValues).median;
  const mDen = spread(c.denValues).median;
  const dash = 'stroke-dasharray="5 3" stroke-width="1.5"';
  out.push(line(X0, vy(mNum), X1, vy(mNum), NUM, dash), line(X0, vy(mDen), X1, vy(mDen), DEN, dash));
  out.push(
    ...rightLabels([
      { y: vy(mNum), s: `median ${num(mNum)}`, fill: NUM },
      { y: vy(mDen), s: `median ${num(mDen)}`, fill: DEN },
    ]),
  );
  out.push(line(X0, vy(0), X1, vy(0), MUTED));

  // Ratios, round by round, against the line of parity.
  const rTop = bottom + 40;
  const rBottom = rTop + 90;
  const m = spread(c.ratios).median;
  let rlo = Math.min(1, ...c.ratios);
  let rhi = Math.max(1, ...c.ratios);
  const pad = Math.max((rhi - rlo) * 0.15, 0.02);
  rlo -= pad;
  rhi += pad;
  const ry = scale(rlo, rhi, rBottom, rTop);
  out.push(text(X0, rTop - 10, `${c.num} ÷ ${c.den}, per round (${c.better} is better)`, { fill: MUTED, max: W - X0 - 16 }));
  const rTicks = [1, ...ticks(rlo, rhi, niceStep((rhi - rlo) / 6)).filter((t) => Math.abs(ry(t) - ry(1)) >= 12)];
  for (const t of rTicks) out.push(line(X0, ry(t), X1, ry(t), t === 1 ? MUTED : GRID), text(X0 - 6, ry(t) + 4, ratio(t), { anchor: 'end', fill: MUTED }));
  out.push(text(18, (rTop + rBottom) / 2, 'ratio', { anchor: 'middle', fill: MUTED, rotate: true }));
  out.push(line(X0, ry(m), X1, ry(m), INK, dash), ...rightLabels([{ y: ry(m), s: `median ${ratio(m)}`, fill: INK }]));
  c.ratios.forEach((v, i) => out.push(`<circle class="ratio" cx="${r1(cx(i))}" cy="${r1(ry(v))}" r="4" fill="${INK}"/>`));

  // Rounds, shared by both panels.
  for (let i = 0; i < n; i++) out.push(text(cx(i), rBottom + 16, String(i + 1), { anchor: 'middle', fill: MUTED }));
  out.push(text((X0 + X1) / 2, rBottom + 32, 'round', { anchor: 'middle', fill: MUTED }));

  const h = rBottom + 44;
  const label = `${figureTitle}: ${c.measure}, ${c.num} vs ${c.den}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" viewBox="0 0 ${W} ${h}" font-family="${FONT}" role="img" aria-label="${escapeXml(label)}">`,
    `<title>${escapeXml(label)}</title>`,
    `<rect width="${W}" height="${h}" fill="#fff"/>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}
