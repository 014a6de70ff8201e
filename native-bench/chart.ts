// Charts of the benchmark scripts (bench:compare, bench:sweep, soak): a vega-lite spec rendered
// to a standalone SVG file in Node, no browser (vega's headless `renderer: 'none'` view).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';

export type ChartSpec = vl.TopLevelSpec;

/** Renders `spec` (vega-lite) to SVG text. */
export async function renderChart(spec: ChartSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders `spec` (vega-lite) and writes it to `file` as SVG (creating its directory). */
export async function writeChart(file: string, spec: ChartSpec): Promise<void> {
  const svg = await renderChart(spec);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, svg);
}

/** One bar of a grouped bar chart: the median of some runs, with their min and max as the error bar. */
export interface SpreadBar {
  /** The panel (one chart of the figure) the bar belongs to. */
  panel: string;
  /** The x position: the group the bar stands in (a percentile, a tool, a rate, a setting). */
  group: string;
  /** The bar within its group (a contender, a setting); one colour each. */
  series: string;
  median: number;
  min: number;
  max: number;
}

/**
 * Grouped bars with min–max error bars, one panel per distinct `panel` (in order of first
 * appearance, `columns` per row), each with its own y axis titled by the panel's name.
 * Groups keep the order of their first appearance, series the order of `seriesOrder`.
 */
export function spreadBarsSpec(options: {
  title: string;
  subtitle?: string | string[];
  bars: SpreadBar[];
  seriesTitle: string;
  seriesOrder: string[];
  columns?: number;
}): ChartSpec {
  const panels = [...new Set(options.bars.map((bar) => bar.panel))];
  const columns = options.columns ?? 2;
  const panelSpec = (panel: string) => {
    const values = options.bars.filter((bar) => bar.panel === panel);
    const groupOrder = [...new Set(values.map((bar) => bar.group))];
    // Explicit domains, not `sort`: a sorted domain is unioned over the layers with duplicates,
    // which leaves room for twice the bars.
    const longLabels = groupOrder.some((group) => group.length > 8);
    const x = { field: 'group', type: 'nominal', scale: { domain: groupOrder }, title: null, axis: { labelAngle: longLabels ? -30 : 0 } } as const;
    const xOffset = { field: 'series', type: 'nominal', scale: { domain: options.seriesOrder } } as const;
    return {
      title: panel,
      // Each bar a fixed step wide: a panel grows with its groups and series.
      width: { step: 24, for: 'offset' },
      height: 200,
      data: { values },
      layer: [
        {
          mark: { type: 'bar', tooltip: true },
          encoding: {
            x, xOffset,
            y: { field: 'median', type: 'quantitative', title: null },
            color: { field: 'series', type: 'nominal', title: options.seriesTitle, scale: { domain: options.seriesOrder, scheme: 'tableau10' } },
          },
        },
        {
          mark: { type: 'rule', color: 'black', strokeWidth: 1.2 },
          encoding: { x, xOffset, y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } },
        },
        {
          // The median's value above each bar, so the figure is readable without hovering.
          mark: { type: 'text', dy: -6, fontSize: 8, baseline: 'bottom' },
          encoding: {
            x, xOffset,
            y: { field: 'max', type: 'quantitative' },
            text: { field: 'median', type: 'quantitative', format: ',.3~r' },
          },
        },
      ],
    };
  };
  const rows: ReturnType<typeof panelSpec>[][] = [];
  panels.forEach((panel, i) => {
    if (i % columns === 0) rows.push([]);
    rows[rows.length - 1]!.push(panelSpec(panel));
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: options.title, ...(options.subtitle !== undefined ? { subtitle: options.subtitle } : {}), anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: null }, axis: { grid: true, gridOpacity: 0.4 } },
    background: 'white',
    padding: 12,
    vconcat: rows.map((row) => ({ hconcat: row })),
  } as ChartSpec;
}
