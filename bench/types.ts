/** One figure of a benchmark, with its reference measured in the same run. */
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  /** The reference tool's figure, same unit, same run. */
  reference?: number;
  /** value / reference (or as the row's note defines it). */
  ratio?: number;
  /** The target, as text (e.g. "≤ 2.0 s"). */
  target?: string;
  note?: string;
}
