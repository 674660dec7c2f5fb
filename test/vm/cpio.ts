/**
 * A cpio archive in the "newc" format (what the kernel unpacks as an initramfs), written from a
 * list of entries: no `cpio` tool needed. Each entry is a 110-byte ASCII header (magic 070701,
 * then 13 fields of 8 hex digits), the NUL-terminated name, padding to 4 bytes, the data,
 * padding to 4 bytes; the archive ends with the entry "TRAILER!!!".
 */
import { gzipSync } from 'node:zlib';

/** One archive member. */
export interface CpioEntry {
  name: string;
  /** Full st_mode (type bits included). */
  mode: number;
  /** File content, or the target of a symlink. */
  data?: Buffer;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** A directory entry. */
export const dirEntry = (name: string, perm = 0o755): CpioEntry => ({ name, mode: S_IFDIR | perm });
/** A regular file entry. */
export const fileEntry = (name: string, data: Buffer, perm = 0o644): CpioEntry => ({ name, mode: S_IFREG | perm, data });
/** A symlink entry. */
export const linkEntry = (name: string, target: string): CpioEntry => ({ name, mode: S_IFLNK | 0o777, data: Buffer.from(target) });

const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

/** The gzip-compressed newc archive of `entries` (parents must come before children). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const put = (e: CpioEntry): void => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(e.name + '\0');
    const fields = [ino++, e.mode, 0, 0, (e.mode & S_IFDIR) === S_IFDIR ? 2 : 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    const header = Buffer.from('070701' + fields.map(hex8).join(''), 'latin1');
    parts.push(header, name, pad4(header.length + name.length), data, pad4(data.length));
  };
  for (const e of entries) put(e);
  put({ name: 'TRAILER!!!', mode: 0 });
  return gzipSync(Buffer.concat(parts));
}
