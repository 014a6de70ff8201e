// The only importer of hash-wasm. Hashers are created once (async, WASM instantiation)
// and then used synchronously on the request path.
import { createCRC32, createSHA256, createXXHash128, type IHasher } from 'hash-wasm';

let sha256: IHasher | undefined;
let xxhash128: IHasher | undefined;
let crc32: IHasher | undefined;

export async function initDigests(): Promise<void> {
  sha256 ??= await createSHA256();
  xxhash128 ??= await createXXHash128();
  crc32 ??= await createCRC32();
}

function ready(hasher: IHasher | undefined): IHasher {
  if (!hasher) throw new Error('initDigests() must run before digests are taken');
  return hasher;
}

/**
 * API keys carry 256 random bits, so one SHA-256 is enough (a slow KDF guards low-entropy
 * passwords, not random keys) and keeps the per-request lookup in microseconds.
 */
export function apiKeyDigest(apiKey: string): string {
  const hasher = ready(sha256);
  hasher.init();
  hasher.update(apiKey);
  return hasher.digest('hex');
}

/** Dedup index key: the org's number then a 128-bit digest of its dedup_id (fixed 20 bytes). */
export function dedupKey(orgNum: number, dedupId: string): Buffer {
  const hasher = ready(xxhash128);
  hasher.init();
  hasher.update(dedupId);
  const key = Buffer.allocUnsafe(20);
  key.writeUInt32BE(orgNum, 0);
  key.set(hasher.digest('binary'), 4);
  return key;
}

/** CRC-32 of a journal frame: finds a frame torn by a power loss. */
export function checksum(data: Uint8Array): number {
  const hasher = ready(crc32);
  hasher.init();
  hasher.update(data);
  return Buffer.from(hasher.digest('binary')).readUInt32BE(0);
}
