/**
 * A FUSE session over an open /dev/fuse: reads requests, hands them to a `FuseFs`, writes the
 * replies. Node has no FUSE binding, and the maintained npm ones (fuse-native: libfuse 2, a
 * native build, prebuilt binaries fetched at install time) do not fit a project without native
 * dependencies, so the kernel protocol is spoken directly; a read-only filesystem needs only a
 * dozen requests.
 *
 * The session runs on a thread of its own (worker.ts). Requests are dispatched as they arrive
 * and never wait for one another: a handler either answers at once (lookups, attributes,
 * listings, reads of open objects: nearly every request) or returns a promise and answers when
 * it settles (a first open that hashes an object whole, a lazy fetch); the kernel matches
 * replies to requests by `unique`, so they may go out in any order.
 *
 * How the device is read depends on whether such a promise is pending. With none, the thread
 * blocks in read(2) itself (readSync), handles the request and writes the reply: a request costs
 * one wake-up of that thread. Reading through libuv's thread pool instead (a pool thread blocks,
 * the event loop is woken for each request) made `ls -lR` 2.5 times slower, so that is done only
 * while a handler waits: a thread blocked in readSync cannot run its own event loop, and the
 * pending handler needs it (the fetch's reply arrives as a message, hashing yields between
 * chunks, deadlines are timers). Once nothing is pending, the next read is a blocking one again.
 *
 * FUSE_INTERRUPT (the caller got a signal, e.g. was killed while its read waited on a fetch) is
 * answered by replying EINTR to the original request if it is still pending; the handler's own
 * reply is then dropped. An INTERRUPT for a request not pending is ignored: with one reader, the
 * original was read before it, so it has been answered already (fuse.rst, "Interrupting FUSE
 * requests", case 2). When the filesystem is unmounted the read fails with ENODEV and the
 * session ends.
 */
import { closeSync, constants as fsConstants, read, readSync, writeSync } from 'node:fs';
import { constants } from 'node:os';
import {
  Fopen,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_READ_BUFFER,
  Init,
  Op,
  SIZE,
  attrOut,
  cString,
  direntSize,
  entryOut,
  getxattrOut,
  initOut,
  openOut,
  readInHeader,
  readInitIn,
  readU64,
  reply,
  statfsOut,
  writeDirent,
  writeEntryOut,
} from './protocol.js';
import type { Attr, InHeader, StatFs } from './protocol.js';

const E = constants.errno;

/** Continue with `fn` on a value, synchronously unless it is a promise. */
function then<T>(v: T | Promise<T>, fn: (x: T) => void): Promise<void> | void {
  if (v instanceof Promise) return v.then(fn);
  fn(v);
}

/** An error a `FuseFs` method throws to reply with an errno. */
export class FuseErrno extends Error {
  constructor(
    /** Positive errno (ENOENT, EIO, …). */
    readonly errno: number,
    message = '',
  ) {
    super(message || `errno ${errno}`);
  }
}

/** An entry found by lookup. */
export interface FuseEntry {
  nodeid: number;
  attr: Attr;
}

/** One directory entry, `.` and `..` included. */
export interface FuseDirItem {
  name: Buffer;
  nodeid: number;
  /** DT_* type. */
  type: number;
}

/** The filesystem a session serves (read-only). Throw FuseErrno to fail a request. */
export interface FuseFs {
  /** Look a name up in a directory; undefined if absent. */
  lookup(parent: number, name: Buffer): FuseEntry | undefined;
  /** Attributes of a node. */
  getattr(node: number): Attr;
  /** Target of a symlink. */
  readlink(node: number): Buffer;
  /** Open a regular file read-only; a handle. */
  open(node: number, flags: number): Promise<number> | number;
  /** Read from an open file. */
  read(fh: number, offset: number, size: number): Promise<Buffer> | Buffer;
  /** Close a file handle. */
  release(fh: number): Promise<void> | void;
  /** Read from a file by node, without an open handle. A filesystem that has this gets
   * zero-message opens where the kernel supports them: no OPEN or RELEASE round trips. */
  readNode?(node: number, offset: number, size: number): Promise<Buffer> | Buffer;
  /** `readNode` answered synchronously where it can be (the file is open already); undefined
   * where it cannot. Lets the session skip a promise (and an event loop turn) per read. */
  readNodeNow?(node: number, offset: number, size: number): Buffer | undefined;
  /** A directory's entries, in order, for one opendir (`.` and `..` first). */
  readdir(node: number): FuseDirItem[];
  /** One xattr value, or undefined (ENODATA). `uid` is the caller's. */
  getxattr(node: number, name: Buffer, uid: number): Buffer | undefined;
  /** Xattr names a caller may see. */
  listxattr(node: number, uid: number): Buffer[];
  /** False when no node has an xattr anyone may see: the session then answers every xattr
   * request with ENOSYS, which the kernel remembers for the mount (no round trip per file for
   * `security.selinux` or `security.capability` from `ls -l`; callers get EOPNOTSUPP). Asked
   * once, at the first xattr request; the answer must not change while mounted. */
  hasXattrs?(): boolean;
  /** Totals for statfs. */
  statfs(): StatFs;
}

/** Options of a session. */
export interface FuseSessionOptions {
  /** Seconds the kernel may cache entries and attributes (the image never changes). */
  validSec?: number;
  /** Where problems are reported (a request that failed with an unexpected error, …). */
  log?: (line: string) => void;
  /** Called (synchronously) once the kernel's INIT has been answered. */
  onInit?: () => void;
  /** Close the descriptor when the session ends (default true; false when another thread
   * opened it and will close it). */
  closeFd?: boolean;
}

/** Largest write the kernel may send (we get none: read-only) and largest read we serve. */
const MAX_WRITE = 128 * 1024;
const MAX_PAGES = 256;
const READ_BUFFER = Math.max(FUSE_MIN_READ_BUFFER, MAX_WRITE + 4096);

/** Microtask turns a handler's promise gets to settle before the session reads on the pool. */
const SETTLE_TURNS = 64;

interface DirHandle {
  items: FuseDirItem[];
}

/** A FUSE session (see the file comment). */
export class FuseSession {
  /** Requests handled, by opcode. */
  readonly counts = new Map<number, number>();
  /** Resolves when the session ended (unmounted, or `stop()`); rejects on an unexpected error. */
  readonly done: Promise<void>;
  /** Whether INIT has been answered. */
  initialized = false;
  /** Pending requests the kernel interrupted (answered EINTR). */
  interrupted = 0;
  private resolveDone!: () => void;
  private rejectDone!: (e: Error) => void;
  private readonly buf = Buffer.allocUnsafe(READ_BUFFER);
  private readonly dirs = new Map<number, DirHandle>();
  private nextDir = 1;
  private noOpendir = false;
  private noOpen = false;
  /** Whether the filesystem has any visible xattr (asked at the first xattr request). */
  private anyXattrs: boolean | undefined;
  /** Entries of recently listed directories by node id (READDIR without OPENDIR). */
  private readonly dirCache = new Map<number, FuseDirItem[]>();
  private ended = false;
  /** Requests whose handler returned a promise that has not settled, by unique. */
  private readonly pending = new Map<bigint, InHeader>();
  /** Pending requests already answered with EINTR: their handler's reply is dropped. */
  private readonly answered = new Set<bigint>();
  private readonly validSec: number;
  private readonly log: (line: string) => void;
  private readonly initCallback: (() => void) | undefined;
  private readonly closeFd: boolean;

  constructor(
    /** The /dev/fuse descriptor (owned by the session from now on). */
    readonly fd: number,
    private readonly fs: FuseFs,
    opts: FuseSessionOptions = {},
  ) {
    this.validSec = opts.validSec ?? 86400;
    this.log = opts.log ?? ((l) => process.stderr.write(l + '\n'));
    this.initCallback = opts.onInit;
    this.closeFd = opts.closeFd ?? true;
    this.done = new Promise<void>((res, rej) => {
      this.resolveDone = res;
      this.rejectDone = rej;
    });
  }

  /** Requests being handled asynchronously (tests, diagnostics). */
  get pendingRequests(): number {
    return this.pending.size;
  }

  /**
   * Serve until the filesystem is unmounted (or `stop()`): read each request, dispatch it
   * without waiting for the ones before (see the file comment). Run this on a thread of its
   * own. Until the device is mounted reads fail with EPERM; they are retried every 5 ms.
   */
  async serve(): Promise<void> {
    while (!this.ended) {
      let n: number;
      try {
        // Block in read(2) while no handler waits; otherwise read on the thread pool, so the
        // event loop runs the waiting handlers meanwhile.
        n = this.pending.size === 0 ? readSync(this.fd, this.buf, 0, this.buf.length, null) : await this.readAsync();
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') continue; // the request vanished
        if (code === 'ENODEV') break; // unmounted
        if (code === 'EPERM' && !this.initialized) {
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        if (code === 'EBADF' && this.ended) break;
        this.finish(e as Error);
        return this.done;
      }
      if (n < SIZE.inHeader) {
        this.finish(new Error(`short FUSE request of ${n} bytes`));
        return this.done;
      }
      // A handler decodes what it needs of the request before it returns; the buffer is
      // reused by the next read.
      if (this.handle(this.buf.subarray(0, n))) {
        // Most promises settle within a few microtask turns (a first open of an object that is
        // here and small: nothing really waits); let them, and keep the blocking read.
        for (let i = 0; i < SETTLE_TURNS && this.pending.size > 0; i++) await undefined;
      }
    }
    this.finish();
    return this.done;
  }

  private readAsync(): Promise<number> {
    return new Promise<number>((resolve, reject) => read(this.fd, this.buf, 0, this.buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
  }

  /** Stop serving (after the request being read) and close the device. */
  stop(): void {
    this.finish();
  }

  private finish(err?: Error): void {
    if (this.ended) return;
    this.ended = true;
    if (this.closeFd) {
      try {
        closeSync(this.fd);
      } catch {
        /* already closed */
      }
    }
    if (err) this.rejectDone(err);
    else this.resolveDone();
  }

  private send(b: Buffer): void {
    if (this.ended) return;
    try {
      writeSync(this.fd, b);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return; // the request was interrupted meanwhile
      if (code === 'ENODEV') return this.finish();
      this.log(`cfsdist fuse: writing a reply failed: ${(e as Error).message}`);
    }
  }

  private ok(h: InHeader, body?: Buffer): void {
    if (this.answered.has(h.unique)) return; // interrupted: EINTR went out instead
    this.send(reply(h.unique, 0, body));
  }

  private fail(h: InHeader, errno: number): void {
    if (this.answered.has(h.unique)) return;
    this.send(reply(h.unique, -errno));
  }

  /**
   * Handle one request. The buffer is only read before this returns; a handler that has to wait
   * returns a promise (settled once it has replied), and the request counts as pending until
   * then, interruptible.
   */
  handle(req: Buffer): Promise<void> | void {
    const h = readInHeader(req);
    const body = req.subarray(SIZE.inHeader, h.len);
    this.counts.set(h.opcode, (this.counts.get(h.opcode) ?? 0) + 1);
    let r: Promise<void> | void;
    try {
      r = this.dispatch(h, body);
    } catch (e) {
      return this.failWith(h, e);
    }
    if (!r) return;
    this.pending.set(h.unique, h);
    return r
      .catch((e: unknown) => this.failWith(h, e))
      .finally(() => {
        this.pending.delete(h.unique);
        this.answered.delete(h.unique);
      });
  }

  /** FUSE_INTERRUPT: answer the original request with EINTR if it is still pending. */
  private interrupt(body: Buffer): void {
    const unique = body.readBigUInt64LE(0);
    const h = this.pending.get(unique);
    if (!h || this.answered.has(unique)) return;
    this.answered.add(unique);
    this.interrupted++;
    this.log(`cfsdist fuse: request ${unique} (opcode ${h.opcode} on node ${h.nodeid}, pid ${h.pid}) was interrupted while it waited; answered EINTR`);
    this.send(reply(unique, -E.EINTR));
  }

  private failWith(h: InHeader, e: unknown): void {
    if (e instanceof FuseErrno) return this.fail(h, e.errno);
    this.log(`cfsdist fuse: request ${h.opcode} on node ${h.nodeid} failed: ${(e as Error)?.message ?? String(e)}`);
    this.fail(h, E.EIO);
  }

  private dispatch(h: InHeader, body: Buffer): Promise<void> | void {
    const fs = this.fs;
    switch (h.opcode) {
      case Op.INIT:
        return this.init(h, body);
      case Op.LOOKUP: {
        const e = fs.lookup(h.nodeid, cString(body));
        // A negative entry (nodeid 0) is cached like a positive one: the image never changes.
        return this.ok(h, e ? entryOut(e.nodeid, e.attr, this.validSec) : entryOut(0, undefined, this.validSec));
      }
      case Op.FORGET:
      case Op.BATCH_FORGET:
        return; // no reply; we keep no per-lookup state
      case Op.INTERRUPT:
        return this.interrupt(body); // no reply to the INTERRUPT itself
      case Op.GETATTR:
        return this.ok(h, attrOut(fs.getattr(h.nodeid), this.validSec));
      case Op.READLINK:
        return this.ok(h, fs.readlink(h.nodeid));
      case Op.OPEN: {
        const flags = body.readUInt32LE(0);
        if ((flags & 3) !== fsConstants.O_RDONLY || flags & fsConstants.O_TRUNC) return this.fail(h, E.EROFS);
        // ENOSYS turns on zero-message opens: the kernel sends no OPEN/RELEASE from now on and
        // READ comes with handle 0 (served by readNode).
        if (this.noOpen) return this.fail(h, E.ENOSYS);
        return then(fs.open(h.nodeid, flags), (fh) => this.ok(h, openOut(fh, Fopen.KEEP_CACHE)));
      }
      case Op.READ: {
        const fh = readU64(body, 0);
        const offset = readU64(body, 8);
        const size = body.readUInt32LE(16);
        if (fh === 0 && fs.readNode) {
          const now = fs.readNodeNow?.(h.nodeid, offset, size);
          if (now) return this.ok(h, now);
          return then(fs.readNode(h.nodeid, offset, size), (data) => this.ok(h, data));
        }
        return then(fs.read(fh, offset, size), (data) => this.ok(h, data));
      }
      case Op.RELEASE:
        return then(fs.release(readU64(body, 0)), () => this.ok(h));
      case Op.OPENDIR: {
        // Where the kernel can do without (zero-message opendir), say so: it then sends neither
        // OPENDIR nor RELEASEDIR again, and READDIR comes with handle 0 (see dirItems).
        if (this.noOpendir) return this.fail(h, E.ENOSYS);
        const id = this.nextDir++;
        this.dirs.set(id, { items: fs.readdir(h.nodeid) });
        return this.ok(h, openOut(id, Fopen.KEEP_CACHE | Fopen.CACHE_DIR));
      }
      case Op.FLUSH:
        // Nothing to flush on a read-only filesystem; ENOSYS makes the kernel stop sending it.
        return this.fail(h, E.ENOSYS);
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(h, body, h.opcode === Op.READDIRPLUS);
      case Op.RELEASEDIR:
        this.dirs.delete(readU64(body, 0));
        return this.ok(h);
      case Op.GETXATTR:
      case Op.LISTXATTR:
        return this.xattr(h, body);
      case Op.STATFS:
        return this.ok(h, statfsOut(fs.statfs()));
      case Op.ACCESS:
      case Op.FSYNC:
      case Op.FSYNCDIR:
        return this.ok(h);
      case Op.SETATTR:
        return this.fail(h, E.EROFS);
      case Op.DESTROY:
        this.ok(h);
        return this.finish();
      default:
        return this.fail(h, E.ENOSYS);
    }
  }

  private init(h: InHeader, body: Buffer): void {
    const i = readInitIn(body);
    if (i.major < FUSE_KERNEL_VERSION) return this.fail(h, E.EPROTO);
    if (i.major > FUSE_KERNEL_VERSION) {
      // The kernel retries with our major version.
      const b = Buffer.alloc(8);
      b.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
      return this.ok(h, b);
    }
    const want =
      Init.ASYNC_READ | Init.PARALLEL_DIROPS | Init.DO_READDIRPLUS | Init.READDIRPLUS_AUTO | Init.CACHE_SYMLINKS | Init.MAX_PAGES | Init.POSIX_ACL | Init.BIG_WRITES | Init.NO_OPENDIR_SUPPORT | Init.NO_OPEN_SUPPORT;
    this.noOpendir = (i.flags & Init.NO_OPENDIR_SUPPORT) !== 0;
    this.noOpen = (i.flags & Init.NO_OPEN_SUPPORT) !== 0 && typeof this.fs.readNode === 'function';
    this.ok(
      h,
      initOut({
        minor: Math.min(i.minor, FUSE_KERNEL_MINOR_VERSION),
        maxReadahead: i.maxReadahead,
        flags: i.flags & want,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWrite: MAX_WRITE,
        maxPages: MAX_PAGES,
      }),
    );
    this.initialized = true;
    // Synchronously: the serving thread may block in read(2) before any microtask runs.
    this.initCallback?.();
  }

  private readdir(h: InHeader, body: Buffer, plus: boolean): void {
    const fh = readU64(body, 0);
    const offset = readU64(body, 8);
    const size = body.readUInt32LE(16);
    const items = fh === 0 ? this.dirItems(h.nodeid, offset) : this.dirs.get(fh)?.items;
    if (!items) return this.fail(h, E.EBADF);
    const out = Buffer.allocUnsafe(size);
    let pos = 0;
    for (let i = offset; i < items.length; i++) {
      const it = items[i]!;
      const need = plus ? SIZE.entryOut + direntSize(it.name.length) : direntSize(it.name.length);
      if (pos + need > size) break;
      if (plus) {
        const dot = it.name.length <= 2 && it.name[0] === 0x2e && (it.name.length === 1 || it.name[1] === 0x2e);
        // `.` and `..` get no entry (nodeid 0): the kernel does not link them.
        writeEntryOut(out, pos, dot ? 0 : it.nodeid, dot ? undefined : this.fs.getattr(it.nodeid), this.validSec);
        pos += SIZE.entryOut;
      }
      pos += writeDirent(out, pos, it.nodeid, i + 1, it.type, it.name);
    }
    this.ok(h, out.subarray(0, pos));
  }

  /** Entries of a directory listed without an open handle: computed when a listing starts
   * (offset 0), reused for its continuation. The image never changes, so any copy is current. */
  private dirItems(node: number, offset: number): FuseDirItem[] {
    let items = offset === 0 ? undefined : this.dirCache.get(node);
    if (!items) {
      items = this.fs.readdir(node);
      this.dirCache.delete(node);
      this.dirCache.set(node, items);
      if (this.dirCache.size > 64) this.dirCache.delete(this.dirCache.keys().next().value as number);
    }
    return items;
  }

  private xattr(h: InHeader, body: Buffer): void {
    this.anyXattrs ??= this.fs.hasXattrs?.() ?? true;
    if (!this.anyXattrs) return this.fail(h, E.ENOSYS);
    const size = body.readUInt32LE(0);
    let data: Buffer;
    if (h.opcode === Op.GETXATTR) {
      const v = this.fs.getxattr(h.nodeid, cString(body, 8), h.uid);
      if (!v) return this.fail(h, E.ENODATA);
      data = v;
    } else {
      const names = this.fs.listxattr(h.nodeid, h.uid);
      data = Buffer.concat(names.flatMap((n) => [n, Buffer.from([0])]));
    }
    if (size === 0) return this.ok(h, getxattrOut(data.length));
    if (data.length > size) return this.fail(h, E.ERANGE);
    this.ok(h, data);
  }
}
