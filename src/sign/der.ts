/**
 * The little DER (ASN.1 distinguished encoding) that a PKCS#7 signature needs: encode
 * definite-length TLVs, and walk the TLVs of an X.509 certificate to find its issuer and serial
 * number. Input is untrusted: every length is checked against the buffer.
 */
import { SignError } from './errors.js';

/** Encode a tag-length-value with a definite length. */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

/** SEQUENCE. */
export const seq = (...c: Buffer[]): Buffer => tlv(0x30, ...c);
/** SET (the caller orders the members; ours have one). */
export const set = (...c: Buffer[]): Buffer => tlv(0x31, ...c);
/** NULL. */
export const nul = (): Buffer => Buffer.from([0x05, 0x00]);
/** OCTET STRING. */
export const octets = (b: Buffer): Buffer => tlv(0x04, b);
/** Context-specific constructed [n] (EXPLICIT). */
export const explicit = (n: number, ...c: Buffer[]): Buffer => tlv(0xa0 | n, ...c);

/** Small non-negative INTEGER. */
export function int(n: number): Buffer {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v & 0xff);
    v = Math.floor(v / 256);
  } while (v > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(0x02, Buffer.from(bytes));
}

/** OBJECT IDENTIFIER from dotted text. */
export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const groups: number[] = [];
    let v = p;
    do {
      groups.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let i = 0; i < groups.length - 1; i++) groups[i]! |= 0x80;
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
}

/** One parsed TLV: its tag, the whole encoding, and its content. */
export interface Tlv {
  tag: number;
  /** The complete TLV bytes. */
  raw: Buffer;
  /** The content bytes. */
  content: Buffer;
}

/** Read the TLV at `off` of `buf`. */
export function readTlv(buf: Buffer, off: number, where: string): Tlv {
  const bad = (m: string): never => {
    throw new SignError('CERT_MALFORMED', `${where}: DER at byte ${off}: ${m}`);
  };
  if (off + 2 > buf.length) bad('truncated header');
  const tag = buf[off]!;
  if ((tag & 0x1f) === 0x1f) bad('multi-byte tags are not supported');
  let len = buf[off + 1]!;
  let hdr = 2;
  if (len & 0x80) {
    const nb = len & 0x7f;
    if (nb === 0 || nb > 4) bad('unsupported length encoding');
    if (off + 2 + nb > buf.length) bad('truncated length');
    len = 0;
    for (let i = 0; i < nb; i++) len = len * 256 + buf[off + 2 + i]!;
    hdr += nb;
  }
  if (off + hdr + len > buf.length) bad(`length ${len} runs past the end`);
  return { tag, raw: buf.subarray(off, off + hdr + len), content: buf.subarray(off + hdr, off + hdr + len) };
}

/** The TLVs inside a constructed TLV's content. */
export function children(t: Tlv, where: string): Tlv[] {
  const out: Tlv[] = [];
  for (let off = 0; off < t.content.length; ) {
    const c = readTlv(t.content, off, where);
    out.push(c);
    off += c.raw.length;
  }
  return out;
}

/** Issuer Name and serialNumber INTEGER (both as complete DER) of an X.509 certificate. */
export function certIssuerAndSerial(certDer: Buffer, where: string): { issuer: Buffer; serial: Buffer } {
  const cert = readTlv(certDer, 0, where);
  const [tbs] = children(cert, where);
  if (!tbs || tbs.tag !== 0x30) throw new SignError('CERT_MALFORMED', `${where}: no TBSCertificate`);
  const f = children(tbs, where);
  let i = 0;
  if (f[0]?.tag === 0xa0) i = 1; // [0] EXPLICIT version
  const serial = f[i];
  const issuer = f[i + 2];
  if (!serial || serial.tag !== 0x02 || !issuer || issuer.tag !== 0x30) throw new SignError('CERT_MALFORMED', `${where}: unexpected TBSCertificate layout`);
  return { issuer: issuer.raw, serial: serial.raw };
}
