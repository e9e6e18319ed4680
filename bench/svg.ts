// Hand-written SVG bar charts for the benchmark figures: no dependency, the
// numbers printed on the bars, one or more panels stacked in one file.

export interface BarSeries {
  readonly name: string;
  readonly color: string;
}

export interface BarGroup {
  readonly label: string;
  /** One value per series, in the order of `series`; undefined leaves a gap. */
  readonly values: readonly (number | undefined)[];
  /** Optional [min, max] per series, drawn as a thin whisker over the bar. */
  readonly ranges?: readonly (readonly [number, number] | undefined)[];
}

export interface BarPanel {
  readonly title: string;
  readonly subtitle?: string;
  readonly yLabel: string;
  readonly series: readonly BarSeries[];
  readonly groups: readonly BarGroup[];
  /** How a value is printed on its bar. */
  readonly format: (value: number) => string;
}

const font = "DejaVu Sans, Helvetica, Arial, sans-serif";

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** 1, 2, 2.5 or 5 × 10^k, so that about `count` ticks cover max. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  return step;
}

function tickLabel(value: number): string {
  if (value >= 1000) return `${Number((value / 1000).toFixed(1))}k`;
  return Number(value.toPrecision(3)).toString();
}

const panelHeight = 360;

function panel(p: BarPanel, width: number, top: number): string {
  const left = 78;
  const right = 20;
  const plotTop = top + (p.subtitle ? 80 : 62);
  const plotHeight = panelHeight - (plotTop - top) - 64;
  const plotWidth = width - left - right;
  const values = p.groups.flatMap((g) => [...g.values.filter((v): v is number => v !== undefined), ...(g.ranges ?? []).flatMap((r) => (r ? [r[1]] : []))]);
  const maxValue = Math.max(...values, 1e-9);
  const step = niceStep(maxValue * 1.12, 5);
  const axisMax = Math.ceil((maxValue * 1.12) / step) * step;
  const y = (v: number) => plotTop + plotHeight - (v / axisMax) * plotHeight;
  const out: string[] = [];
  out.push(`<text x="${left}" y="${top + 22}" font-size="16" font-weight="bold">${escape(p.title)}</text>`);
  if (p.subtitle) out.push(`<text x="${left}" y="${top + 40}" font-size="12" fill="#555">${escape(p.subtitle)}</text>`);
  // legend, on its own line under the title
  let legendX = left;
  const legendY = top + (p.subtitle ? 58 : 40);
  for (const s of p.series) {
    out.push(`<rect x="${legendX.toFixed(1)}" y="${legendY - 10}" width="11" height="11" fill="${s.color}"/>`);
    out.push(`<text x="${(legendX + 16).toFixed(1)}" y="${legendY}" font-size="12">${escape(s.name)}</text>`);
    legendX += 16 + s.name.length * 7 + 22;
  }
  // grid and y axis
  for (let v = 0; v <= axisMax + step / 2; v += step) {
    const yy = y(v).toFixed(1);
    out.push(`<line x1="${left}" x2="${left + plotWidth}" y1="${yy}" y2="${yy}" stroke="${v === 0 ? "#333" : "#e3e3e3"}" stroke-width="1"/>`);
    out.push(`<text x="${left - 6}" y="${yy}" font-size="11" text-anchor="end" dominant-baseline="middle" fill="#444">${tickLabel(v)}</text>`);
  }
  const midY = plotTop + plotHeight / 2;
  out.push(`<text x="${20}" y="${midY}" font-size="12" text-anchor="middle" transform="rotate(-90 20 ${midY})" fill="#222">${escape(p.yLabel)}</text>`);
  // bars
  const groupWidth = plotWidth / p.groups.length;
  const barWidth = Math.min(56, (groupWidth * 0.78) / p.series.length);
  p.groups.forEach((group, gi) => {
    const groupX = left + gi * groupWidth;
    const barsX = groupX + (groupWidth - barWidth * p.series.length) / 2;
    p.series.forEach((s, si) => {
      const value = group.values[si];
      if (value === undefined) return;
      const x = barsX + si * barWidth;
      const top = y(value);
      out.push(`<rect x="${(x + 1).toFixed(1)}" y="${top.toFixed(1)}" width="${(barWidth - 2).toFixed(1)}" height="${(plotTop + plotHeight - top).toFixed(1)}" fill="${s.color}"><title>${escape(`${group.label}, ${s.name}: ${p.format(value)}`)}</title></rect>`);
      const range = group.ranges?.[si];
      let labelY = top - 5;
      if (range) {
        const cx = (x + barWidth / 2).toFixed(1);
        const [lo, hi] = [y(range[0]).toFixed(1), y(range[1]).toFixed(1)];
        out.push(`<line x1="${cx}" x2="${cx}" y1="${lo}" y2="${hi}" stroke="#222" stroke-width="1"/>`);
        out.push(`<line x1="${(x + barWidth / 2 - 4).toFixed(1)}" x2="${(x + barWidth / 2 + 4).toFixed(1)}" y1="${hi}" y2="${hi}" stroke="#222" stroke-width="1"/>`);
        out.push(`<line x1="${(x + barWidth / 2 - 4).toFixed(1)}" x2="${(x + barWidth / 2 + 4).toFixed(1)}" y1="${lo}" y2="${lo}" stroke="#222" stroke-width="1"/>`);
        labelY = Math.min(labelY, y(range[1]) - 5);
      }
      out.push(`<text x="${(x + barWidth / 2).toFixed(1)}" y="${labelY.toFixed(1)}" font-size="11" text-anchor="middle" fill="#111">${escape(p.format(value))}</text>`);
    });
    const lines = group.label.split("\n");
    lines.forEach((line, li) => {
      out.push(`<text x="${(groupX + groupWidth / 2).toFixed(1)}" y="${plotTop + plotHeight + 18 + li * 15}" font-size="12" text-anchor="middle" fill="#222">${escape(line)}</text>`);
    });
  });
  return out.join("\n");
}

/** Splits text into lines of at most about `chars` characters, at spaces. */
function wrap(text: string, chars: number): string[] {
  const lines: string[] = [];
  for (const paragraph of text.split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      if (line !== "" && line.length + 1 + word.length > chars) {
        lines.push(line);
        line = word;
      } else {
        line = line === "" ? word : `${line} ${word}`;
      }
    }
    lines.push(line);
  }
  return lines;
}

/** An SVG document of the panels stacked top to bottom, with an optional footnote. */
export function barChartSvg(panels: readonly BarPanel[], { width = 860, footnote }: { width?: number; footnote?: string } = {}): string {
  const footLines = footnote ? wrap(footnote, Math.floor((width - 24) / 6.3)) : [];
  const height = panels.length * panelHeight + footLines.length * 15 + 16;
  const body = panels.map((p, i) => panel(p, width, 10 + i * panelHeight)).join("\n");
  const foot = footLines
    .map((line, i) => `<text x="12" y="${panels.length * panelHeight + 10 + i * 15}" font-size="11" fill="#555">${escape(line)}</text>`)
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${font}">
<rect width="100%" height="100%" fill="#ffffff"/>
${body}
${foot}
</svg>
`;
}
