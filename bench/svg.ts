/** Minimal SVG bar charts for the bench report (no dependencies). */

/** One bar. */
export interface Bar {
  label: string;
  value: number;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A horizontal bar chart; `marker` draws a vertical reference line (e.g. ratio 1.0). */
export function barChart(title: string, bars: Bar[], opts: { unit?: string; marker?: number } = {}): string {
  const rowH = 26;
  const labelW = 430;
  const plotW = 360;
  const top = 40;
  const h = top + bars.length * rowH + 30;
  const max = Math.max(opts.marker ?? 0, ...bars.map((b) => b.value), 1e-9) * 1.1;
  const x = (v: number) => labelW + (v / max) * plotW;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + plotW + 90}" height="${h}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  parts.push(`<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`);
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${esc(b.label)}</text>`);
    parts.push(`<rect x="${labelW}" y="${y + 4}" width="${Math.max(1, x(b.value) - labelW).toFixed(1)}" height="${rowH - 8}" fill="#4a7ebb"/>`);
    parts.push(`<text x="${(x(b.value) + 5).toFixed(1)}" y="${y + 16}">${b.value.toFixed(b.value < 10 ? 2 : 0)}${esc(opts.unit ?? '')}</text>`);
  });
  if (opts.marker !== undefined) {
    const mx = x(opts.marker).toFixed(1);
    parts.push(`<line x1="${mx}" y1="${top - 4}" x2="${mx}" y2="${h - 24}" stroke="#c33" stroke-dasharray="4 3"/>`);
    parts.push(`<text x="${mx}" y="${h - 8}" fill="#c33" text-anchor="middle">${opts.marker}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
