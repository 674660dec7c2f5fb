/**
 * The kernel's fs-verity builtin signature (Documentation/filesystems/fsverity.rst, "Built-in
 * signature verification"): a DER PKCS#7 SignedData, detached, over the 44-byte
 * `struct fsverity_formatted_digest` = "FSVerity" | le16 algorithm (1 = SHA-256) |
 * le16 digest size (32) | digest. The kernel checks it against the `.fs-verity` keyring when
 * FS_IOC_ENABLE_VERITY is given the signature.
 *
 * We build the PKCS#7 ourselves rather than run `fsverity sign`/`openssl`: the structure is
 * small and fixed, signing needs only the image digest (not the image file), and nothing has
 * to be installed. The layout is the one fsverity-utils produces (PKCS7_NOATTR | NOCERTS |
 * DETACHED | BINARY): version 1, digestAlgorithms {sha256 NULL}, contentInfo {data}, no
 * certificates, one SignerInfo {version 1, issuerAndSerialNumber, sha256 NULL,
 * rsaEncryption NULL | ecdsa-with-SHA256, signature}. With an RSA key the bytes are identical
 * to `fsverity sign` (PKCS#1 v1.5 is deterministic); the tests check that and verify the result
 * with `openssl smime -verify`. Keys: RSA or ECDSA (what the kernel's PKCS#7 verifier takes).
 */
import { X509Certificate, createPrivateKey, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SignError } from './errors.js';
import { certIssuerAndSerial, explicit, int, nul, octets, oid, seq, set } from './der.js';

const OID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const OID_DATA = '1.2.840.113549.1.7.1';
const OID_SHA256 = '2.16.840.1.101.3.4.2.1';
const OID_RSA = '1.2.840.113549.1.1.1';
const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2';

/** FS_VERITY_HASH_ALG_SHA256. */
export const FS_VERITY_HASH_ALG_SHA256 = 1;

/** The kernel's `fsverity_formatted_digest` for a SHA-256 fs-verity digest. */
export function formattedDigest(digest: Buffer): Buffer {
  if (digest.length !== 32) throw new SignError('BAD_DIGEST', `fs-verity digest must be 32 bytes, got ${digest.length}`);
  const b = Buffer.alloc(12 + 32);
  b.write('FSVerity', 0, 'latin1');
  b.writeUInt16LE(FS_VERITY_HASH_ALG_SHA256, 8);
  b.writeUInt16LE(32, 10);
  digest.copy(b, 12);
  return b;
}

/** A key and certificate for builtin signatures. */
export interface FsveritySigner {
  key: KeyObject;
  cert: X509Certificate;
  /** For messages. */
  source: string;
}

/** Load a PEM private key (RSA or EC) and its PEM/DER X.509 certificate. */
export async function loadFsveritySigner(keyPath: string, certPath: string): Promise<FsveritySigner> {
  let key: KeyObject;
  let cert: X509Certificate;
  try {
    key = createPrivateKey(await readFile(keyPath));
  } catch (err) {
    throw new SignError('KEY_READ', `cannot read fs-verity signing key ${keyPath}: ${(err as Error).message}`, { cause: err });
  }
  try {
    cert = new X509Certificate(await readFile(certPath));
  } catch (err) {
    throw new SignError('CERT_MALFORMED', `cannot read certificate ${certPath}: ${(err as Error).message}`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec') {
    throw new SignError('KEY_TYPE', `${keyPath}: ${key.asymmetricKeyType} keys cannot make kernel fs-verity signatures (use RSA or ECDSA)`);
  }
  if (!cert.checkPrivateKey(key)) throw new SignError('KEY_TYPE', `${certPath} is not the certificate of ${keyPath}`);
  return { key, cert, source: certPath };
}

/** DER PKCS#7 detached signature over formattedDigest(digest) (see the file comment). */
export function signFsverityDigest(digest: Buffer, signer: FsveritySigner): Buffer {
  const content = formattedDigest(digest);
  const { issuer, serial } = certIssuerAndSerial(signer.cert.raw, signer.source);
  const isRsa = signer.key.asymmetricKeyType === 'rsa';
  // No signed attributes: the signature is over the content itself.
  const signature = cryptoSign('sha256', content, isRsa ? signer.key : { key: signer.key, dsaEncoding: 'der' });
  const sha256 = seq(oid(OID_SHA256), nul());
  const sigAlg = isRsa ? seq(oid(OID_RSA), nul()) : seq(oid(OID_ECDSA_SHA256));
  const signerInfo = seq(int(1), seq(issuer, serial), sha256, sigAlg, octets(signature));
  const signedData = seq(int(1), set(sha256), seq(oid(OID_DATA)), set(signerInfo));
  return seq(oid(OID_SIGNED_DATA), explicit(0, signedData));
}
