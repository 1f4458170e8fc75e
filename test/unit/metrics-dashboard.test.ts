// deploy/grafana/kelp-dashboard.json against the exporter: valid JSON, and every metric a query
// names is one the exporter registers (a renamed metric breaks this test, not a dashboard in
// production), with the labels the query groups or filters by.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KelpMetrics } from '../../src/metrics/exporter';

const FILE = path.join(__dirname, '../../deploy/grafana/kelp-dashboard.json');

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string }>;
  panels?: Panel[];
}

function exprs(panels: Panel[]): Array<{ panel: string; expr: string }> {
  return panels.flatMap((p) => [...(p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })), ...exprs(p.panels ?? [])]);
}

/** Labels each registered family carries (histogram series add `le`). */
async function registered(): Promise<Map<string, Set<string>>> {
  const m = new KelpMetrics({ counters: () => [], maps: () => [] });
  const out = new Map<string, Set<string>>();
  for (const metric of await m.registry.getMetricsAsJSON()) {
    // Prometheus adds instance and job at scrape.
    const labels = new Set<string>(['instance', 'job']);
    const base = metric.name;
    const single = m.registry.getSingleMetric(base) as unknown as { labelNames: string[] };
    for (const l of single.labelNames) labels.add(l);
    if (String(metric.type) === 'histogram') {
      labels.add('le');
      for (const suffix of ['_bucket', '_sum', '_count']) out.set(base + suffix, labels);
    } else {
      out.set(base, labels);
    }
  }
  return out;
}

describe('Grafana dashboard', () => {
  const dash = JSON.parse(readFileSync(FILE, 'utf8')) as { uid: string; title: string; panels: Panel[]; templating: { list: Array<{ definition?: string }> } };

  it('is a dashboard with queries', () => {
    expect(dash.uid).toBe('kelp-node');
    expect(exprs(dash.panels).length).toBeGreaterThan(10);
  });

  it('names only metrics the exporter registers, grouped and filtered by labels they have', async () => {
    const known = await registered();
    const used = new Set<string>();
    const queries = [...exprs(dash.panels), ...dash.templating.list.filter((v) => v.definition).map((v) => ({ panel: 'variable', expr: v.definition! }))];
    for (const { panel, expr } of queries) {
      // Label values (map names) are strings, not metrics.
      const names = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').match(/\bkelp_[a-z0-9_]+/g) ?? [];
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of names) {
        expect(known.has(name), `${panel}: ${name} is not a metric of the exporter`).toBe(true);
        used.add(name.replace(/_(bucket|sum|count)$/, ''));
        // Labels in selectors ({label=...}) and groupings (by (...)).
        const labels = [...expr.matchAll(/([a-z_]+)\s*(?:=~|!=|!~|=)\s*"/g)].map((m) => m[1]);
        for (const g of expr.matchAll(/by \(([^)]*)\)/g)) labels.push(...g[1].split(',').map((s) => s.trim()));
        for (const l of labels) if (expr.includes(`${name}{`) || expr.includes(`${name}[`)) expect([...known.get(name)!], `${panel}: label ${l} of ${name}`).toContain(l);
      }
    }
    // Every family has a panel.
    const families = new Set([...known.keys()].map((n) => n.replace(/_(bucket|sum|count)$/, '')));
    expect([...families].filter((f) => !used.has(f))).toEqual([]);
  });
});
