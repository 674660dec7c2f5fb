/** A one-line progress display for a terminal: objects, bytes, rate and ETA. */

/** Human-readable bytes. */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function clock(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '--:--';
  const s = Math.round(sec);
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** A progress line redrawn in place (at most every 100 ms) on a TTY stream. */
export class ProgressLine {
  private last = 0;
  private start = Date.now();
  private drawn = false;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly label: string,
  ) {}

  /** Redraw with new figures (`phase` shown when no object is moving yet). */
  update(p: { phase?: string; objectsDone: number; objectsTotal: number; bytesDone: number; bytesTotal: number }, force = false): void {
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const secs = (now - this.start) / 1000;
    const rate = secs > 0 ? p.bytesDone / secs : 0;
    const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / rate : Infinity;
    const frac = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : p.objectsTotal > 0 ? p.objectsDone / p.objectsTotal : 0;
    const width = 20;
    const full = Math.max(0, Math.min(width, Math.round(frac * width)));
    const bar = '#'.repeat(full) + '-'.repeat(width - full);
    const text =
      p.phase && p.phase !== 'objects'
        ? `${this.label}: ${p.phase}…`
        : `${this.label} [${bar}] ${p.objectsDone}/${p.objectsTotal} objects  ${humanBytes(p.bytesDone)}/${humanBytes(p.bytesTotal)}  ${humanBytes(rate)}/s  ETA ${clock(eta)}`;
    const cols = this.out.columns || 100;
    this.out.write('\r' + text.slice(0, cols - 1) + '\x1b[K');
    this.drawn = true;
  }

  /** Erase the line. */
  done(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}
