/** `cfsdist inspect`: what an image of the store is, what it runs, and who signed it. */
import { stat } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import { parseRef } from '../store/names.js';
import { isHexDigest, toHex } from '../verity/digest.js';
import { resolveImage } from './container.js';
import { parseImageConfig } from './command.js';

/** The report (also `--json`). */
export interface InspectReport {
  ref: string;
  image: string;
  name?: string;
  tag?: string;
  platform?: string;
  manifest?: string;
  /** The multi-platform index the manifest was picked from. */
  index?: string;
  /** Built locally from this ordinary registry image: no cfsdist signature covers it. */
  unsignedFrom?: string;
  config?: {
    digest: string;
    size: number;
    architecture?: string;
    os?: string;
    entrypoint: string[] | null;
    cmd: string[] | null;
    env: string[];
    user: string;
    workdir: string;
    labels: Record<string, string>;
    stopSignal: string;
    exposedPorts: string[];
  };
  signature?: { verified: boolean; keyid?: string; version?: number; created?: string; expires?: string; configSigned?: boolean; error?: string };
  entries: number;
  objects: number;
  /** Image file size. */
  imageBytes: number;
  /** Sum of the sizes of the objects present. */
  objectBytes: number;
  /** Objects the image names that the store lacks. */
  missingObjects: number;
}

/** Inspect NAME[:TAG] or an image digest. */
export async function inspectImage(store: Store, ref: string): Promise<InspectReport> {
  const img = await resolveImage(store, ref);
  const r: InspectReport = { ref, image: toHex(img.digest), entries: 0, objects: 0, imageBytes: 0, objectBytes: 0, missingObjects: 0 };
  const bare = ref.startsWith('sha256:') ? ref.slice(7) : ref;
  if (!isHexDigest(bare)) Object.assign(r, parseRef(ref));
  if (img.meta.platform) r.platform = img.meta.platform;
  if (img.meta.manifest) r.manifest = img.meta.manifest;
  if (img.meta.index) r.index = img.meta.index;
  if (img.meta.unsignedFrom) r.unsignedFrom = img.meta.unsignedFrom;
  if (img.configBytes && img.meta.config) {
    const c = parseImageConfig(img.configBytes);
    const k = c.config;
    r.config = {
      digest: img.meta.config,
      size: img.configBytes.length,
      architecture: c.architecture,
      os: c.os,
      entrypoint: k.Entrypoint ?? null,
      cmd: k.Cmd ?? null,
      env: k.Env ?? [],
      user: k.User ?? '',
      workdir: k.WorkingDir ?? '',
      labels: k.Labels ?? {},
      stopSignal: k.StopSignal ?? '',
      exposedPorts: Object.keys(k.ExposedPorts ?? {}),
    };
  }
  if (r.name !== undefined && r.tag !== undefined && !r.unsignedFrom) r.signature = await signatureFacts(store, r.name, r.tag);
  const { readImageFile } = await import('../erofs/reader.js');
  const { lsEntries } = await import('../erofs/reader-listing.js');
  for (const _ of lsEntries(readImageFile(img.path))) r.entries++;
  r.imageBytes = (await stat(img.path)).size;
  const objs = await store.imageObjects(img.digest);
  r.objects = objs.length;
  for (const d of objs) {
    const st = await stat(store.objects.path(d)).catch(() => undefined);
    if (st) r.objectBytes += st.size;
    else r.missingObjects++;
  }
  return r;
}

async function signatureFacts(store: Store, name: string, tag: string): Promise<InspectReport['signature']> {
  const s = await import('../sign/index.js');
  const records = new s.SignRecords(store.dir);
  const bytes = await records.readStatement(name, tag);
  if (!bytes) return undefined;
  const iso = (sec: number): string => new Date(sec * 1000).toISOString();
  try {
    const trusted = await s.loadTrustedKeys([], records.trustDir);
    const v = await s.verifyImage(store, name, tag, trusted);
    const st = v.statement;
    return { verified: true, keyid: v.keyid, version: st.version, created: iso(st.created), expires: iso(st.expires), configSigned: st.config !== undefined };
  } catch (e) {
    // Not verifiable here (no trusted key, expired, changed): show what it claims, unverified.
    try {
      const env = s.parseEnvelope(bytes, 'statement');
      const st = s.parseStatementPayload(Buffer.from(env.payload, 'base64'), 'statement');
      return { verified: false, keyid: env.signatures[0]?.keyid, version: st.version, created: iso(st.created), expires: iso(st.expires), configSigned: st.config !== undefined, error: (e as Error).message };
    } catch {
      return { verified: false, error: (e as Error).message };
    }
  }
}

/** Human-readable lines of a report. */
export function inspectLines(r: InspectReport): string[] {
  const q = (a: string[] | null): string => (a === null ? '(none)' : JSON.stringify(a));
  const lines = [`image         ${r.image}`];
  if (r.name) lines.push(`tag           ${r.name}:${r.tag}`);
  if (r.signature) {
    const sg = r.signature;
    lines.push(`signature     ${sg.verified ? 'verified' : 'NOT verified'}${sg.keyid ? ` key ${sg.keyid.slice(0, 16)}` : ''}${sg.version !== undefined ? ` version ${sg.version}` : ''}${sg.expires ? ` expires ${sg.expires}` : ''}${sg.configSigned === false ? ' (config not signed)' : ''}${sg.error ? ` (${sg.error})` : ''}`);
  } else lines.push(`signature     ${r.unsignedFrom ? `UNSIGNED: built locally from ${r.unsignedFrom}` : '(unsigned)'}`);
  lines.push(`platform      ${r.platform ?? '(unknown)'}`, `manifest      ${r.manifest ?? '(none)'}${r.index ? ` (from index ${r.index})` : ''}`);
  if (r.config) {
    const c = r.config;
    lines.push(`config        ${c.digest} (${c.size} bytes)`, `entrypoint    ${q(c.entrypoint)}`, `cmd           ${q(c.cmd)}`, `user          ${c.user || '(root)'}`, `workdir       ${c.workdir || '/'}`);
    lines.push(`stop signal   ${c.stopSignal || 'SIGTERM'}`);
    for (const e of c.env) lines.push(`env           ${e}`);
    for (const [k, v] of Object.entries(c.labels)) lines.push(`label         ${k}=${v}`);
    if (c.exposedPorts.length) lines.push(`ports         ${c.exposedPorts.join(' ')}`);
  } else lines.push('config        (none: run needs an explicit command)');
  lines.push(`entries       ${r.entries}`, `objects       ${r.objects}${r.missingObjects ? ` (${r.missingObjects} missing)` : ''}`, `bytes         ${r.objectBytes} in objects, ${r.imageBytes} image`);
  return lines;
}
