/**
 * A small SVG writer for the benchmark report: elements as strings with escaped attributes and text,
 * and the one chart the report draws (cumulative distributions on a logarithmic time axis). No
 * charting library: the report needs a few lines and labels, and a library would be a dependency
 * for that alone.
 */

type Attrs = Record<string, string | number>;

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** One element; `children` are already rendered elements, or text when `text` is set. */
export function el(name: string, attrs: Attrs, children: readonly string[] = [], text?: string): string {
  const a = Object.entries(attrs)
    .map(([k, v]) => ` ${k}="${escapeXml(String(v))}"`)
    .join('');
  if (text !== undefined) return `<${name}${a}>${escapeXml(text)}</${name}>`;
  if (children.length === 0) return `<${name}${a}/>`;
  return `<${name}${a}>\n${children.join('\n')}\n</${name}>`;
}

export interface CdfSeries {
  label: string;
  /** Points of the distribution: `ms` below which `fraction` (0–1) of the samples lie, ascending. */
  points: readonly { ms: number; fraction: number }[];
  /** Dashed when the points are a few recorded percentiles rather than every sample. */
  fromPercentiles: boolean;
}

/** The points of a distribution from its samples: one step per sample. */
export function cdfFromSamples(samples: readonly number[]): { ms: number; fraction: number }[] {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted.map((ms, i) => ({ ms, fraction: (i + 1) / sorted.length }));
}

/** The 1-2-5 value next below (or above) `v`, the axis's end, so no empty decade is drawn. */
function niceStep(v: number, direction: 'down' | 'up'): number {
  const decade = Math.pow(10, Math.floor(Math.log10(v)));
  const steps = [1, 2, 5, 10].map((m) => m * decade);
  return direction === 'down' ? steps.filter((s) => s <= v).pop()! : steps.find((s) => s >= v)!;
}

const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd'];
const WIDTH = 720;
const HEIGHT = 400;
const MARGIN = { left: 60, right: 20, top: 40, bottom: 70 };

/** Cumulative distributions of latencies, x logarithmic in ms, y 0–100 %; one path per series. */
export function cdfChart(title: string, series: readonly CdfSeries[]): string {
  const all = series.flatMap((s) => s.points.map((p) => p.ms)).filter((v) => v > 0);
  const lo = niceStep(Math.min(...all), 'down');
  const hi = niceStep(Math.max(...all), 'up');
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (ms: number) =>
    MARGIN.left + ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / Math.log10(hi / lo)) * plotW;
  const y = (fraction: number) => MARGIN.top + (1 - fraction) * plotH;
  const f = (v: number) => v.toFixed(1);

  const grid: string[] = [];
  for (let decade = Math.pow(10, Math.floor(Math.log10(lo))); decade <= hi * 1.0001; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const v = decade * m;
      if (v < lo * 0.9999 || v > hi * 1.0001) continue;
      grid.push(
        el('line', { x1: f(x(v)), x2: f(x(v)), y1: MARGIN.top, y2: MARGIN.top + plotH, stroke: '#ddd' }),
      );
      grid.push(
        el(
          'text',
          { x: f(x(v)), y: MARGIN.top + plotH + 16, 'text-anchor': 'middle', 'font-size': 11 },
          [],
          `${+v.toPrecision(3)}`,
        ),
      );
    }
  }
  for (const pct of [0, 25, 50, 75, 90, 99, 100]) {
    // 99 % gets its line, not its label: at this height it would overlap 100 %'s.
    grid.push(
      el('line', {
        x1: MARGIN.left,
        x2: MARGIN.left + plotW,
        y1: f(y(pct / 100)),
        y2: f(y(pct / 100)),
        stroke: '#eee',
      }),
    );
    if (pct === 99) continue;
    grid.push(
      el(
        'text',
        { x: MARGIN.left - 6, y: f(y(pct / 100) + 4), 'text-anchor': 'end', 'font-size': 11 },
        [],
        `${pct} %`,
      ),
    );
  }

  const paths = series.map((s, i) => {
    let d = '';
    let prev = 0;
    for (const p of s.points) {
      // A step: up at the sample's time from the fraction below it (samples), or a straight line
      // between recorded percentiles (where nothing is known of the samples in between).
      if (d === '') d = `M${f(x(p.ms))},${f(y(s.fromPercentiles ? p.fraction : prev))}`;
      else if (!s.fromPercentiles) d += ` H${f(x(p.ms))}`;
      d += s.fromPercentiles ? ` L${f(x(p.ms))},${f(y(p.fraction))}` : ` V${f(y(p.fraction))}`;
      prev = p.fraction;
    }
    const attrs: Attrs = { d, fill: 'none', stroke: COLOURS[i % COLOURS.length]!, 'stroke-width': 2 };
    if (s.fromPercentiles) attrs['stroke-dasharray'] = '6 4';
    return el('path', attrs);
  });

  const legend = series.map((s, i) => {
    const ly = HEIGHT - 22 + 0;
    const lx = MARGIN.left + i * 300;
    return el('g', {}, [
      el('line', {
        x1: lx,
        x2: lx + 24,
        y1: ly,
        y2: ly,
        stroke: COLOURS[i % COLOURS.length]!,
        'stroke-width': 2,
      }),
      el(
        'text',
        { x: lx + 30, y: ly + 4, 'font-size': 12 },
        [],
        s.label + (s.fromPercentiles ? ' (recorded percentiles)' : ''),
      ),
    ]);
  });

  return `${el(
    'svg',
    {
      xmlns: 'http://www.w3.org/2000/svg',
      width: WIDTH,
      height: HEIGHT,
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      'font-family': 'sans-serif',
    },
    [
      el('rect', { x: 0, y: 0, width: WIDTH, height: HEIGHT, fill: 'white' }),
      el('text', { x: WIDTH / 2, y: 22, 'text-anchor': 'middle', 'font-size': 15 }, [], title),
      ...grid,
      el('rect', {
        x: MARGIN.left,
        y: MARGIN.top,
        width: plotW,
        height: plotH,
        fill: 'none',
        stroke: '#888',
      }),
      el(
        'text',
        { x: MARGIN.left + plotW / 2, y: MARGIN.top + plotH + 34, 'text-anchor': 'middle', 'font-size': 12 },
        [],
        'latency (ms, logarithmic)',
      ),
      ...paths,
      ...legend,
    ],
  )}\n`;
}
