/**
 * Content encodings of the wire: `zstd` (the Debian `zstd` tool as a child process — Node 20's
 * zlib has no zstd), `gzip` (zlib, in process) and `identity`. Both ends stream: memory stays
 * bounded by the pipe buffers whatever the size of the content.
 *
 * The digest that names and verifies an object is always the fs-verity digest of the decoded
 * content; encodings only change what travels.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Duplex } from 'node:stream';
import type { Readable, Writable } from 'node:stream';
import { createGunzip, createGzip } from 'node:zlib';
import { CfsError } from '../errors.js';

/** A content encoding cfsdist speaks. */
export type Encoding = 'zstd' | 'gzip' | 'identity';

/** How a side chooses encodings: `auto` = zstd if the tool is installed, else gzip. */
export type CompressMode = 'auto' | 'zstd' | 'gzip' | 'none';

/** An encoding that failed (tool missing, corrupt stream). */
export class EncodingError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

let zstdOk: boolean | undefined;

/** True if the `zstd` tool is installed here: an executable `zstd` on PATH (looked up once, no
 * process started — a pull asks before choosing a delta, and starting `zstd --version` costs
 * more than the lookup by two orders of magnitude). A broken binary shows up as the error of the
 * first real use. */
export function haveZstd(): boolean {
  if (zstdOk === undefined) {
    zstdOk = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter).some((d) => {
      if (!d) return false;
      try {
        accessSync(join(d, 'zstd'), constants.X_OK);
        return statSync(join(d, 'zstd')).isFile();
      } catch {
        return false;
      }
    });
  }
  return zstdOk;
}

/** The encodings a mode allows, best first. */
export function encodingsFor(mode: CompressMode): Encoding[] {
  switch (mode) {
    case 'none':
      return [];
    case 'gzip':
      return ['gzip'];
    case 'zstd':
      return haveZstd() ? ['zstd'] : [];
    default:
      return haveZstd() ? ['zstd', 'gzip'] : ['gzip'];
  }
}

/** Parse a --compress value. */
export function parseCompressMode(s: string | undefined, what = '--compress'): CompressMode {
  const v = s ?? 'auto';
  if (v === 'auto' || v === 'zstd' || v === 'gzip' || v === 'none') return v;
  throw new EncodingError('BAD_COMPRESS', `${what} must be auto, zstd, gzip or none, not ${JSON.stringify(s)}`);
}

/** `Accept-Encoding` value for a mode. */
export function acceptEncoding(mode: CompressMode): string {
  const e = encodingsFor(mode);
  return e.length ? [...e, 'identity'].join(', ') : 'identity';
}

/** The encoding a server in `mode` picks for a request's Accept-Encoding header. */
export function negotiate(acceptHeader: string | undefined, mode: CompressMode): Encoding {
  if (!acceptHeader) return 'identity';
  const accepted = new Set<string>();
  for (const part of acceptHeader.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (q && Number(q.slice(2)) === 0) continue;
    if (name) accepted.add(name);
  }
  for (const e of encodingsFor(mode)) if (accepted.has(e)) return e;
  return 'identity';
}

let liveFilters = 0;

/** Filter processes (zstd) of this process running now: a server bounds how many it starts
 * (it falls back to in-process gzip, or refuses an encoded upload, at its cap). */
export function filterProcesses(): number {
  return liveFilters;
}

/** A Duplex around a filter process (bytes in on stdin, out on stdout). A non-zero exit or a
 * spawn failure destroys the stream with EncodingError; destroying the stream kills the process. */
function processFilter(cmd: string, args: string[], what: string): Duplex {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  liveFilters++;
  let counted = true;
  const uncount = (): void => {
    if (counted) liveFilters--;
    counted = false;
  };
  const stdin = child.stdin as Writable;
  const stdout = child.stdout as Readable;
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    if (stderr.length < 2000) stderr += c.toString();
  });
  let finished = false;
  const d = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (stdin.write(chunk)) cb();
      else stdin.once('drain', cb);
    },
    final(cb) {
      stdin.end(cb);
    },
    read() {
      stdout.resume();
    },
    destroy(err, cb) {
      if (!finished) child.kill('SIGKILL');
      cb(err);
    },
  });
  stdout.on('data', (c: Buffer) => {
    if (!d.push(c)) stdout.pause();
  });
  stdin.on('error', () => undefined); // EPIPE when the process dies first: reported via its exit
  child.on('error', (e: NodeJS.ErrnoException) => {
    finished = true;
    uncount();
    d.destroy(new EncodingError('ENCODING_TOOL', e.code === 'ENOENT' ? `${cmd} not found (install the Debian package ${cmd})` : `${cmd}: ${e.message}`));
  });
  child.on('close', (code, signal) => {
    finished = true;
    uncount();
    if (d.destroyed) return;
    if (code === 0) d.push(null);
    else d.destroy(new EncodingError('ENCODING_CORRUPT', `${what}: ${cmd} ${signal ? `killed by ${signal}` : `exited with ${code}`}${stderr ? `: ${stderr.trim().split('\n').pop()}` : ''}`));
  });
  return d;
}

/** A compressing stream for `enc` (undefined for identity). */
export function encoder(enc: Encoding): Duplex | undefined {
  if (enc === 'gzip') return createGzip({ level: 1, chunkSize: 64 * 1024 });
  if (enc === 'zstd') return processFilter('zstd', ['-1', '-c', '-q', '--no-progress'], 'zstd compression');
  return undefined;
}

/** A decompressing stream for a Content-Encoding value (undefined for identity); throws
 * EncodingError for an encoding we do not speak. */
export function decoder(contentEncoding: string | undefined, where: string): Duplex | undefined {
  const enc = (contentEncoding ?? 'identity').trim().toLowerCase();
  if (enc === '' || enc === 'identity') return undefined;
  if (enc === 'gzip' || enc === 'x-gzip') return createGunzip({ chunkSize: 64 * 1024 });
  if (enc === 'zstd') return processFilter('zstd', ['-d', '-c', '-q', '--no-progress'], `${where}: zstd decompression`);
  throw new EncodingError('ENCODING_UNKNOWN', `${where}: unsupported Content-Encoding ${JSON.stringify(contentEncoding)}`);
}
