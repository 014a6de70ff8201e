// SSRF guard for webhook URLs: checked when the URL is configured (checkWebhookUrl) and again at
// connect time (guardedLookup), because DNS can change between the two (rebinding).
import dns from 'node:dns';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { ApiError, validationError } from '../errors.ts';

export const MAX_URL_LENGTH = 2048;

export class BlockedAddressError extends Error {
  constructor(readonly address: string, hostname?: string) {
    super(`Refusing to connect${hostname ? ` to ${hostname}` : ''}: ${address} is a private, loopback, link-local or reserved address.`);
    this.name = 'BlockedAddressError';
  }
}

/** True unless the address is plain public unicast; anything unparseable counts as blocked. */
export function isBlockedAddress(address: string): boolean {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    // process() turns ::ffff:a.b.c.d into the IPv4 it stands for.
    ip = ipaddr.process(address);
  } catch {
    return true;
  }
  if (ip.kind() === 'ipv6') {
    // ::/96 (IPv4-compatible, deprecated) is 'unicast' to ipaddr.js but can reach IPv4 on some stacks.
    const parts = (ip as ipaddr.IPv6).parts;
    if (parts.slice(0, 6).every((part) => part === 0)) return true;
  }
  // Private, loopback, link-local, CGNAT, multicast, reserved, NAT64, 6to4, Teredo... all non-unicast.
  return ip.range() !== 'unicast';
}

export type Resolver = (host: string) => Promise<string[]>;

const systemResolver: Resolver = async (host) => {
  const answers = await dns.promises.lookup(host, { all: true, verbatim: true });
  return answers.map((answer) => answer.address);
};

function invalid(message: string): ApiError {
  return new ApiError('invalid_webhook_url', message, { field: 'webhook_url' });
}

function blocked(message: string): ApiError {
  return new ApiError('blocked_webhook_url', message, { field: 'webhook_url' });
}

function isLocalhostName(host: string): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  return name === 'localhost' || name.endsWith('.localhost');
}

/** Validates a webhook URL and, unless allowPrivate, refuses hosts that are or resolve to non-public addresses. */
export async function checkWebhookUrl(raw: unknown, allowPrivate: boolean, resolve: Resolver = systemResolver): Promise<URL> {
  if (typeof raw !== 'string') throw validationError('webhook_url', 'webhook_url must be a string.');
  if (raw.length > MAX_URL_LENGTH) throw invalid(`The webhook URL is longer than ${MAX_URL_LENGTH} characters.`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid('The webhook URL is not a valid absolute URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('The webhook URL must use http or https.');
  // Checked again after parsing: normalisation (IDNA, percent-encoding) can lengthen it.
  if (url.href.length > MAX_URL_LENGTH) throw invalid(`The webhook URL is longer than ${MAX_URL_LENGTH} characters.`);
  if (url.username !== '' || url.password !== '') throw invalid('The webhook URL must not contain credentials.');
  if (url.hostname === '') throw invalid('The webhook URL has no host.');
  if (allowPrivate) return url;

  // WHATWG URL already normalised IPv4 forms (2130706433, 0x7f.1, 127.1) to dotted quads.
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (ipaddr.isValid(host)) {
    if (isBlockedAddress(host)) throw blocked(`The webhook URL host ${host} is not a public address.`);
    return url;
  }
  if (isLocalhostName(host)) throw blocked(`The webhook URL host ${host} is a loopback name.`);

  let addresses: string[];
  try {
    addresses = await resolve(host);
  } catch {
    addresses = [];
  }
  if (addresses.length === 0) throw invalid(`The webhook URL host ${host} does not resolve.`);
  const bad = addresses.find(isBlockedAddress);
  // Any one blocked answer is enough: the connection could be made to it.
  if (bad !== undefined) throw blocked(`The webhook URL host ${host} resolves to ${bad}, which is not a public address.`);
  return url;
}

/**
 * A dns.lookup replacement for net/tls/undici `connect.lookup`: the socket connects to the very
 * address checked here, so no second resolution can swap in a private one. Node skips lookup
 * for IP-literal hosts, so those must be checked by the caller (checkWebhookUrl does).
 */
export function guardedLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) {
        callback(err, options.all ? [] : '', undefined);
        return;
      }
      if (!allowPrivate) {
        if (isLocalhostName(hostname)) {
          callback(new BlockedAddressError(addresses[0]?.address ?? hostname, hostname), options.all ? [] : '', undefined);
          return;
        }
        // Refuse when any answer is blocked, as checkWebhookUrl does, rather than filter.
        const bad = addresses.find((entry) => isBlockedAddress(entry.address));
        if (bad) {
          callback(new BlockedAddressError(bad.address, hostname), options.all ? [] : '', undefined);
          return;
        }
      }
      if (options.all) {
        callback(null, addresses);
        return;
      }
      const first = addresses[0];
      if (!first) {
        const notFound: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
        notFound.code = 'ENOTFOUND';
        callback(notFound, '', undefined);
        return;
      }
      callback(null, first.address, first.family);
    });
  };
}
