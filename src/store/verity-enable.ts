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

function run(file: string, signature?: string): Promise<{ ok: boolean; message: string }> {
  const args = ['enable', ...(signature ? [`--signature=${signature}`] : []), file];
  return new Promise((resolve) => {
    execFile('fsverity', args, { timeout: 30_000 }, (err, _stdout, stderr) => {
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

  /**
   * Enable fs-verity with a builtin signature (DER PKCS#7 file): the kernel checks it against
   * the `.fs-verity` keyring and refuses the ioctl when it does not verify. Not gated on the
   * probe: with `fs.verity.require_signatures=1` the (unsigned) probe fails while a signed
   * enable succeeds. `message` is the kernel's reason when it refused.
   */
  async enableSigned(file: string, signature: string): Promise<{ ok: boolean; message: string }> {
    return run(file, signature);
  }
}

/** What the kernel measured for each file (`fsverity measure`, FS_IOC_MEASURE_VERITY): hex
 * digest, or null when the file has no fs-verity or cannot be measured; in input order. One
 * process per batch prints `sha256:HEX PATH` per file and stops at the first file it cannot
 * measure; the batch goes on after that file. Paths must not contain newlines (store paths
 * do not). */
export async function measureFiles(files: string[]): Promise<(string | null)[]> {
  const out: (string | null)[] = new Array<string | null>(files.length).fill(null);
  const BATCH = 512;
  let i = 0;
  while (i < files.length) {
    const part = files.slice(i, i + BATCH);
    const got = await measureBatch(part);
    let k = 0;
    while (k < part.length && got.has(part[k]!)) {
      out[i + k] = got.get(part[k]!)!;
      k++;
    }
    if (k === part.length) {
      i += k;
      continue;
    }
    // part[k] failed; anything measured after it counts too.
    for (let r = k + 1; r < part.length; r++) out[i + r] = got.get(part[r]!) ?? null;
    const rest = part.slice(k + 1);
    i += k + 1;
    if (rest.length > 0 && rest.every((f) => !got.has(f))) continue; // stopped at part[k]: measure the rest
    i += rest.length;
  }
  return out;
}

function measureBatch(files: string[]): Promise<Map<string, string>> {
  return new Promise((resolve) => {
    execFile('fsverity', ['measure', ...files], { timeout: 120_000, maxBuffer: 128 * files.length + (1 << 20) }, (_err, stdout) => {
      const got = new Map<string, string>();
      for (const line of String(stdout ?? '').split('\n')) {
        const m = /^sha256:([0-9a-f]{64}) (.*)$/.exec(line);
        if (m) got.set(m[2]!, m[1]!);
      }
      resolve(got);
    });
  });
}

/** Whether a file with fs-verity carries a builtin signature (`fsverity dump_metadata
 * signature`: FS_IOC_READ_VERITY_METADATA). The kernel verified that signature against its
 * `.fs-verity` keyring when fs-verity was enabled; false when there is none or no fs-verity. */
export function hasBuiltinSignature(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('fsverity', ['dump_metadata', 'signature', file], { timeout: 30_000, encoding: 'buffer', maxBuffer: 1 << 20 }, (err, stdout) => {
      resolve(!err && stdout.length > 0);
    });
  });
}
