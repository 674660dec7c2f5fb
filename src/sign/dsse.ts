/**
 * DSSE — Dead Simple Signing Envelope (github.com/secure-systems-lab/dsse, the envelope of
 * in-toto attestations and sigstore bundles):
 *
 *   { "payloadType": "<media type>", "payload": "<base64>",
 *     "signatures": [ { "keyid": "<hex>", "sig": "<base64>" } ] }
 *
 * Each signature is over PAE(payloadType, payload), the pre-authentication encoding
 *   "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
 * with LEN the ASCII decimal byte length, so neither the type nor the body can be swapped.
 * cfsdist signs with ed25519 (pure, over the PAE bytes); keyid is the hex SHA-256 of the
 * signer's SPKI DER public key (keys.ts).
 */
import { sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { SignError } from './errors.js';
import type { PrivateKeyEntry, PublicKeyEntry } from './keys.js';

/** One DSSE signature. */
export interface DsseSignature {
  keyid: string;
  sig: string;
}

/** A DSSE envelope (JSON form). */
export interface DsseEnvelope {
  payloadType: string;
  payload: string;
  signatures: DsseSignature[];
}

/** Upper bound of an envelope we are willing to parse. */
export const MAX_ENVELOPE_BYTES = 1 << 20;

/** The DSSE v1 pre-authentication encoding of (type, body). */
export function pae(payloadType: string, body: Buffer): Buffer {
  const t = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${t.length} `), t, Buffer.from(` ${body.length} `), body]);
}

/** Sign `body` of type `payloadType` with each key; returns the envelope. */
export function signEnvelope(payloadType: string, body: Buffer, keys: PrivateKeyEntry[]): DsseEnvelope {
  const msg = pae(payloadType, body);
  return {
    payloadType,
    payload: body.toString('base64'),
    signatures: keys.map((k) => ({ keyid: k.keyid, sig: cryptoSign(null, msg, k.key).toString('base64') })),
  };
}

/** Serialise an envelope (UTF-8 JSON, one line + newline). */
export function encodeEnvelope(env: DsseEnvelope): Buffer {
  return Buffer.from(JSON.stringify(env) + '\n', 'utf8');
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function strictBase64(s: unknown, what: string, where: string): Buffer {
  if (typeof s !== 'string' || s.length % 4 !== 0 || !B64.test(s)) throw new SignError('ENVELOPE_MALFORMED', `${where}: ${what} is not standard base64`);
  return Buffer.from(s, 'base64');
}

/** Parse and shape-check envelope bytes (not the signatures). `where` names the source. */
export function parseEnvelope(bytes: Buffer, where: string): DsseEnvelope {
  if (bytes.length > MAX_ENVELOPE_BYTES) throw new SignError('ENVELOPE_MALFORMED', `${where}: envelope of ${bytes.length} bytes is larger than ${MAX_ENVELOPE_BYTES}`);
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new SignError('ENVELOPE_MALFORMED', `${where}: not JSON (${(err as Error).message})`);
  }
  const o = v as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new SignError('ENVELOPE_MALFORMED', `${where}: not a DSSE envelope (expected a JSON object)`);
  if (typeof o.payloadType !== 'string') throw new SignError('ENVELOPE_MALFORMED', `${where}: DSSE envelope without payloadType`);
  strictBase64(o.payload, 'payload', where);
  if (o.signatures === undefined || (Array.isArray(o.signatures) && o.signatures.length === 0)) {
    throw new SignError('UNSIGNED', `${where}: the statement carries no signature`);
  }
  if (!Array.isArray(o.signatures)) throw new SignError('ENVELOPE_MALFORMED', `${where}: signatures is not a list`);
  const sigs: DsseSignature[] = [];
  for (const [i, s] of (o.signatures as unknown[]).entries()) {
    const r = s as Record<string, unknown>;
    if (typeof r !== 'object' || r === null) throw new SignError('ENVELOPE_MALFORMED', `${where}: signature ${i} is not an object`);
    strictBase64(r.sig, `signature ${i}`, where);
    sigs.push({ keyid: typeof r.keyid === 'string' ? r.keyid : '', sig: r.sig as string });
  }
  return { payloadType: o.payloadType, payload: o.payload as string, signatures: sigs };
}

/** Result of verifying an envelope: the payload and the trusted key that signed it. */
export interface VerifiedEnvelope {
  payloadType: string;
  body: Buffer;
  keyid: string;
  keySource: string;
}

/**
 * Verify an envelope against trusted keys: at least one signature must be a valid ed25519
 * signature over the PAE by a trusted key. Throws SignError NO_TRUST (no keys given),
 * UNKNOWN_KEY (no signature by a trusted key), BAD_SIGNATURE (a trusted key's signature fails).
 * Signatures without a keyid are tried against every trusted key.
 */
export function verifyEnvelope(env: DsseEnvelope, trusted: PublicKeyEntry[], where: string): VerifiedEnvelope {
  if (trusted.length === 0) throw new SignError('NO_TRUST', `${where}: no trusted keys (pass --trust KEY.pub or put keys in the store's trust/ directory)`);
  const body = Buffer.from(env.payload, 'base64');
  const msg = pae(env.payloadType, body);
  let badBy: string | undefined;
  for (const s of env.signatures) {
    const candidates = s.keyid ? trusted.filter((k) => k.keyid === s.keyid) : trusted;
    for (const k of candidates) {
      let ok = false;
      try {
        ok = cryptoVerify(null, msg, k.key, Buffer.from(s.sig, 'base64'));
      } catch {
        ok = false;
      }
      if (ok) return { payloadType: env.payloadType, body, keyid: k.keyid, keySource: k.source };
      badBy ??= k.keyid;
    }
  }
  if (badBy) throw new SignError('BAD_SIGNATURE', `${where}: bad signature: the signature by trusted key ${badBy.slice(0, 16)}… does not match the statement (edited or corrupt)`);
  const ids = env.signatures.map((s) => (s.keyid ? s.keyid.slice(0, 16) + '…' : '(no keyid)')).join(', ');
  throw new SignError('UNKNOWN_KEY', `${where}: signed by unknown key ${ids}; trusted: ${trusted.map((k) => k.keyid.slice(0, 16) + '…').join(', ')}`);
}
