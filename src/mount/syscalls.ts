/**
 * The new mount API (fsopen, fsconfig, fsmount, move_mount) from Node, which has no syscall
 * interface: a small co-process speaks it for us. Perl is used because Debian always has it
 * (`perl-base` is Essential) and its `syscall` builtin calls any system call by number; the
 * script below is a dumb shim — one line in, one system call, one line out — and every decision
 * (what to mount, which fallback) stays in TypeScript.
 *
 * The file-descriptor system calls of the new API have the same numbers on every architecture
 * (428..433 were allocated in the unified table), so the shim is not x86-specific.
 *
 * Wire format: requests are `OP\tARG…\n` with strings hex-encoded (any byte survives); replies
 * are `OK <int>` or `ERR <errno> <hex of the filesystem context's log>`. The log is what the
 * kernel wrote to the fs context ("e overlay: Unknown parameter 'x'"), which names the fault far
 * better than errno alone.
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Interface } from 'node:readline';
import { constants as osConstants } from 'node:os';
import { MountError } from './errors.js';

/** fsmount / mount_setattr attribute bits (MOUNT_ATTR_*). */
export const MOUNT_ATTR_RDONLY = 0x1;
/** No set-user-ID / set-group-ID execution. */
export const MOUNT_ATTR_NOSUID = 0x2;
/** No device special files. */
export const MOUNT_ATTR_NODEV = 0x4;

const SCRIPT = String.raw`
use strict; use warnings;
$| = 1;
sub unhex { my $s = $_[0]; $s = '' unless defined $s; return pack('H*', $s) }
sub ctxlog {
  my ($fd) = @_;
  return '' if $fd < 0;
  my @m;
  # Read through a duplicate of the context fd: a handle made on the fd itself ('<&=') would
  # close the context when it goes out of scope, and the next fsconfig would get EBADF.
  open(my $fh, '<&', $fd) or return '';
  for (1 .. 64) {
    my $buf = '';
    my $n = sysread($fh, $buf, 8192);
    last unless defined $n && $n > 0;
    push @m, $buf;
  }
  return unpack('H*', join("\n", @m));
}
while (my $line = <STDIN>) {
  chomp $line;
  my ($op, @a) = split /\t/, $line, -1;
  my $r = -1; my $ctx = -1;
  if ($op eq 'fsopen') {
    my $t = unhex($a[0]);
    $r = syscall(430, $t, 1);
  } elsif ($op eq 'string') {
    $ctx = $a[0] + 0; my $k = unhex($a[1]); my $v = unhex($a[2]);
    $r = syscall(431, $ctx, 1, $k, $v, 0);
  } elsif ($op eq 'flag') {
    $ctx = $a[0] + 0; my $k = unhex($a[1]);
    $r = syscall(431, $ctx, 0, $k, undef, 0);
  } elsif ($op eq 'fd') {
    $ctx = $a[0] + 0; my $k = unhex($a[1]); my $fd = $a[2] + 0;
    $r = syscall(431, $ctx, 5, $k, undef, $fd);
  } elsif ($op eq 'create') {
    $ctx = $a[0] + 0;
    $r = syscall(431, $ctx, 6, undef, undef, 0);
  } elsif ($op eq 'fsmount') {
    $ctx = $a[0] + 0; my $attrs = $a[1] + 0;
    $r = syscall(432, $ctx, 1, $attrs);
  } elsif ($op eq 'move') {
    my $fd = $a[0] + 0; my $empty = ''; my $to = unhex($a[1]);
    $r = syscall(429, $fd, $empty, -100, $to, 4);
  } elsif ($op eq 'close') {
    # POSIX is not loaded (it costs ~10 ms at start-up): close through a handle on the fd.
    if (open(my $fh, '<&=', $a[0] + 0)) { $r = close($fh) ? 0 : -1 } else { $r = -1 }
  } else {
    $! = 22;
  }
  if (defined $r && $r >= 0) { print "OK $r\n" }
  else { my $e = $! + 0; print "ERR $e " . ctxlog($ctx) . "\n" }
}
`;

/** A failed system call of the new mount API: errno, and the fs context's log if any. */
export class SyscallError extends MountError {
  /** errno number. */
  readonly errno: number;
  /** errno name (`EINVAL`, …) or the number. */
  readonly errnoName: string;
  /** Lines the kernel logged to the filesystem context. */
  readonly log: string[];
  constructor(op: string, errno: number, log: string[]) {
    const name = errnoName(errno);
    super('SYSCALL', `${op}: ${name}${log.length ? ` (${log.join('; ')})` : ''}`);
    this.errno = errno;
    this.errnoName = name;
    this.log = log;
  }
}

/** `EINVAL` for 22, etc. */
export function errnoName(errno: number): string {
  for (const [k, v] of Object.entries(osConstants.errno)) if (v === errno) return k;
  return String(errno);
}

const hex = (s: string): string => Buffer.from(s).toString('hex');

/** The new mount API, spoken by a perl co-process (see the file comment). */
export class MountApi {
  private child: ChildProcessWithoutNullStreams;
  private lines: Interface;
  private waiting: ((line: string | undefined) => void)[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private exited = false;

  private constructor(extraFds: number[]) {
    const stdio: (number | 'pipe')[] = ['pipe', 'pipe', 'pipe', ...extraFds];
    // Typed as "without null streams": stdin/stdout/stderr are pipes.
    this.child = spawn('perl', ['-e', SCRIPT], { stdio }) as unknown as ChildProcessWithoutNullStreams;
    this.lines = createInterface({ input: this.child.stdout });
    this.lines.on('line', (l) => this.waiting.shift()?.(l));
    const gone = (): void => {
      this.exited = true;
      for (const w of this.waiting.splice(0)) w(undefined);
    };
    this.child.on('exit', gone);
    this.child.on('error', gone);
    this.child.stderr.resume();
    this.child.stdin.on('error', () => undefined); // EPIPE after the helper died: reported by call()
  }

  /**
   * Start the co-process; `extraFds` are inherited as fds 3, 4, … (FUSE passes /dev/fuse).
   * Resolves to undefined when perl is missing or the kernel has no new mount API (ENOSYS) —
   * the caller then falls back to mount(8). Other errors (EPERM) are thrown.
   */
  static async start(extraFds: number[] = []): Promise<MountApi | undefined> {
    const api = new MountApi(extraFds);
    try {
      const fd = await api.fsopen('overlay').catch(async (e: unknown) => {
        if (e instanceof SyscallError && e.errno === osConstants.errno.ENODEV) return api.fsopen('erofs');
        throw e;
      });
      await api.close(fd);
      return api;
    } catch (e) {
      await api.end();
      if (e instanceof SyscallError && e.errno === osConstants.errno.ENOSYS) return undefined;
      if (e instanceof MountError && e.code === 'NO_HELPER') return undefined;
      throw e;
    }
  }

  private call(op: string, args: (string | number)[]): Promise<number> {
    const run = (): Promise<number> =>
      new Promise<number>((resolve, reject) => {
        if (this.exited) return reject(new MountError('NO_HELPER', 'the mount helper (perl) is not running; is perl installed?'));
        this.waiting.push((line) => {
          if (line === undefined) return reject(new MountError('NO_HELPER', 'the mount helper (perl) exited; is perl installed?'));
          const m = /^(OK|ERR) (-?\d+)(?: ([0-9a-f]*))?$/.exec(line);
          if (!m) return reject(new MountError('HELPER_PROTOCOL', `mount helper: unexpected reply ${JSON.stringify(line.slice(0, 200))}`));
          if (m[1] === 'OK') return resolve(Number(m[2]));
          const log = Buffer.from(m[3] ?? '', 'hex').toString('utf8').split('\n').map((s) => s.trim()).filter(Boolean);
          reject(new SyscallError(`${op} ${args.slice(1).map(String).join(' ')}`.trim(), Number(m[2]), log));
        });
        this.child.stdin.write([op, ...args.map(String)].join('\t') + '\n');
      });
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** fsopen(type): a filesystem context fd. */
  fsopen(type: string): Promise<number> {
    return this.call('fsopen', [hex(type)]).catch((e: unknown) => {
      if (e instanceof SyscallError) (e as { message: string }).message = `fsopen ${type}: ${e.errnoName}`;
      throw e;
    });
  }

  /** fsconfig(FSCONFIG_SET_STRING). */
  setString(ctx: number, key: string, value: string): Promise<void> {
    return this.named(`fsconfig ${key}=${value}`, this.call('string', [ctx, hex(key), hex(value)]));
  }

  /** fsconfig(FSCONFIG_SET_FLAG). */
  setFlag(ctx: number, key: string): Promise<void> {
    return this.named(`fsconfig ${key}`, this.call('flag', [ctx, hex(key)]));
  }

  /** fsconfig(FSCONFIG_SET_FD): a layer given by an open (or detached-mount) fd. */
  setFd(ctx: number, key: string, fd: number): Promise<void> {
    return this.named(`fsconfig ${key}=<fd>`, this.call('fd', [ctx, hex(key), fd]));
  }

  /** fsconfig(FSCONFIG_CMD_CREATE): build the superblock. */
  create(ctx: number, what: string): Promise<void> {
    return this.named(`create ${what}`, this.call('create', [ctx]));
  }

  /** fsmount(ctx, FSMOUNT_CLOEXEC, attrs): a detached mount fd. */
  async fsmount(ctx: number, attrs: number, what: string): Promise<number> {
    try {
      return await this.call('fsmount', [ctx, attrs]);
    } catch (e) {
      throw rename(e, `fsmount ${what}`);
    }
  }

  /** move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH): attach a detached mount. */
  moveMount(fd: number, target: string): Promise<void> {
    return this.named(`move_mount to ${target}`, this.call('move', [fd, hex(target)]));
  }

  /** close(fd) in the helper. */
  async close(fd: number): Promise<void> {
    await this.call('close', [fd]);
  }

  private async named(what: string, p: Promise<number>): Promise<void> {
    try {
      await p;
    } catch (e) {
      throw rename(e, what);
    }
  }

  /** Stop the helper and wait until it is gone: its fds, and detached mounts nobody else holds,
   * go with it (a mount it still held would make an unmount right after this fail with EBUSY). */
  async end(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
      this.child.stdin.end();
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
    this.lines.close();
  }
}

function rename(e: unknown, what: string): unknown {
  if (e instanceof SyscallError) {
    (e as { message: string }).message = `${what}: ${e.errnoName}${e.log.length ? ` (${e.log.join('; ')})` : ''}`;
  }
  return e;
}
