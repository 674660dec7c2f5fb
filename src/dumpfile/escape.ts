/**
 * Dumpfile field escaping (spec §1.2): `\\ \n \r \t \xHH` on input; the canonical writer form
 * escapes every byte that is not C-locale `isgraph` as `\xHH`, plus `=` in xattr fields.
 */

const HEX = '0123456789abcdef';

/** Thrown by `unescapeField`; the parser turns it into a DumpfileError with line and field. */
export class EscapeError extends Error {}

function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** Decode an escaped field given as a latin1 string (one char per byte). */
export function unescapeField(s: string): Buffer {
  if (s.indexOf('\\') < 0) return Buffer.from(s, 'latin1');
  return Buffer.from(unescapeLatin1(s), 'latin1');
}

/** Decode an escaped field to a latin1 string (one char per byte). */
export function unescapeLatin1(s: string): string {
  if (s.indexOf('\\') < 0) return s;
  const out = Buffer.allocUnsafe(s.length);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x5c) {
      out[n++] = c;
      continue;
    }
    if (i + 1 >= s.length) throw new EscapeError('No character after escape');
    const e = s.charCodeAt(++i);
    switch (e) {
      case 0x5c: out[n++] = 0x5c; break;
      case 0x6e: out[n++] = 0x0a; break;
      case 0x72: out[n++] = 0x0d; break;
      case 0x74: out[n++] = 0x09; break;
      case 0x78: {
        const hi = i + 1 < s.length ? hexVal(s.charCodeAt(i + 1)) : -1;
        const lo = i + 2 < s.length ? hexVal(s.charCodeAt(i + 2)) : -1;
        if (hi < 0 || lo < 0) throw new EscapeError('Invalid hex escape');
        out[n++] = (hi << 4) | lo;
        i += 2;
        break;
      }
      default:
        throw new EscapeError('Unsupported escape type ' + String.fromCharCode(e));
    }
  }
  return out.subarray(0, n).toString('latin1');
}

/**
 * Encode bytes in the canonical form. `escapeEquals` for xattr keys and values; `dashAlone`
 * writes a value that is exactly `-` as `\x2d` so it is not read back as "absent"; `keepSpace`
 * leaves a space as it is (the `composefs-info ls` form of paths).
 */
export function escapeField(b: Uint8Array, escapeEquals = false, dashAlone = true, keepSpace = false): string {
  if (dashAlone && b.length === 1 && b[0] === 0x2d) return '\\x2d';
  const lo = keepSpace ? 0x20 : 0x21;
  let plain = true;
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c < lo || c >= 0x7f || c === 0x5c || (escapeEquals && c === 0x3d)) {
      plain = false;
      break;
    }
  }
  if (plain) return Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
  let s = '';
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0x5c) s += '\\\\';
    else if (c === 0x0a) s += '\\n';
    else if (c === 0x0d) s += '\\r';
    else if (c === 0x09) s += '\\t';
    else if (c < lo || c >= 0x7f || (escapeEquals && c === 0x3d)) s += '\\x' + HEX[c >> 4] + HEX[c & 15];
    else s += String.fromCharCode(c);
  }
  return s;
}
