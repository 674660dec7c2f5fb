/**
 * Turning fs-verity on for stored files. Node has no ioctl, so this runs `fsverity enable`
 * (Debian package fsverity). Support is probed once per store directory and process, on a
 * scratch file in the store's temporary directory: where the kernel or filesystem lacks
 * fs-verity (or the tool is missing) the probe fails, the reason is kept in `message` for the
 * CLI to show once, and no further attempt is made. Enabling never makes an add fail.
 */
import { execFile } from 'node:child_process';
import { mkdir, open, unlink } from 'node:fs/promises';
import { tempPath } from './atomic.js';

function run(file: string): Promise<{ ok: boolean; message: string }> {
  return new Promise((resolve) => {
    execFile('fsverity', ['enable', file], { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!err) resolve({ ok: true, message: '' });
      else {
        const e = err as NodeJS.ErrnoException;
        const last = String(stderr).trim().split('\n').pop() || e.message;
        // "ERROR: FS_IOC_ENABLE_VERITY failed on 'FILE': REASON" → "fsverity enable: REASON"
        const why = e.code === 'ENOENT' ? 'the fsverity tool is not installed' : `fsverity enable: ${last.slice(last.lastIndexOf(': ') + 2) || last}`;
        resolve({ ok: false, message: why });
      }
    });
  });
}

/** fs-verity support of one directory's filesystem, probed once. */
export class VerityEnabler {
  /** Where probe files are written (same filesystem as the objects). */
  readonly tmpDir: string;
  /** Undefined until probed; then whether objects get fs-verity enabled. */
  supported: boolean | undefined;
  /** Why fs-verity is not used (empty when supported). */
  message = '';
  private probing: Promise<boolean> | undefined;

  private label: string;

  constructor(tmpDir: string, opts: { disabled?: boolean; label?: string } = {}) {
    this.tmpDir = tmpDir;
    this.label = opts.label ?? tmpDir;
    if (opts.disabled) {
      this.supported = false;
      this.message = 'fs-verity enabling disabled by option';
    }
  }

  /** Probe once (cached): does `fsverity enable` work on this filesystem? */
  probe(): Promise<boolean> {
    if (this.supported !== undefined) return Promise.resolve(this.supported);
    if (!this.probing) {
      this.probing = (async () => {
        await mkdir(this.tmpDir, { recursive: true });
        const file = tempPath(this.tmpDir);
        const fh = await open(file, 'wx', 0o644);
        try {
          await fh.write(Buffer.from('cfsdist fs-verity probe\n'));
        } finally {
          await fh.close();
        }
        const r = await run(file);
        await unlink(file).catch(() => undefined);
        this.supported = r.ok;
        this.message = r.ok ? '' : `fs-verity is not available for ${this.label} (${r.message}); objects are stored without it`;
        return r.ok;
      })().catch((err: Error) => {
        this.supported = false;
        this.message = `fs-verity probe failed: ${err.message}`;
        return false;
      });
    }
    return this.probing;
  }

  /** Enable fs-verity on a closed file if supported; returns whether it is now enabled. */
  async enable(file: string): Promise<boolean> {
    if (!(await this.probe())) return false;
    const r = await run(file);
    return r.ok;
  }
}
