// A TCP proxy between the server under test and Postgres, run inside the test or bench process,
// to cut the server off from its database: the pipeline tests simulate an outage with close() and
// reopen(), the drain bench (native-bench/drain.ts) holds the queries while it fills the log.
// Three states:
//   open    bytes flow both ways.
//   held    connections stay up and a new connection still completes its handshake (up to the
//           first ReadyForQuery), but every byte the server sends after that is held back until
//           release(). Queries wait without an error, so the drain never goes into its retry
//           backoff; on release they go out and the drain runs at once, at full parallelism.
//   closed  new connections are refused and open ones are cut: queries fail, and the drain
//           retries each batch with backoff (up to 5 s) until the proxy is reopened.
import net from 'node:net';

/** Int32 request codes of the 8-byte SSLRequest and GSSENCRequest, which Postgres answers with one byte. */
const ENCRYPTION_REQUESTS = new Set([80877103, 80877104]);
const READY_FOR_QUERY = 0x5a; // 'Z'
const NO_ENCRYPTION = 0x4e; // 'N'

interface Link {
  client: net.Socket;
  upstream: net.Socket;
  /** The first ReadyForQuery went to the client: from now on its bytes may be held. */
  ready: boolean;
  /** Encrypted (TLS/GSS): the messages cannot be followed, so this link is never held. */
  opaque: boolean;
  /** The client opened with an encryption request: the server's first byte is its one-byte answer. */
  expectAnswer: boolean;
  sawClientData: boolean;
  scan: Buffer;
  held: Buffer[];
}

export class PgProxy {
  private server: net.Server | null = null;
  private readonly links = new Set<Link>();
  private holding = false;
  port = 0;
  /** Connections accepted since start. */
  accepted = 0;
  /** Bytes held back during the last hold. */
  heldBytes = 0;
  /** Links that could not be held because they are encrypted. */
  opaqueLinks = 0;

  private constructor(
    readonly targetHost: string,
    readonly targetPort: number,
  ) {}

  /** A proxy on 127.0.0.1:<free port> to the host:port of a postgres:// URL. */
  static async forDatabase(databaseUrl: string): Promise<PgProxy> {
    const url = new URL(databaseUrl);
    const proxy = new PgProxy(url.hostname || '127.0.0.1', Number(url.port || 5432));
    await proxy.listen(0);
    return proxy;
  }

  /** `databaseUrl` with host:port replaced by the proxy's (user, password and database kept). */
  urlFor(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.href;
  }

  get state(): 'open' | 'held' | 'closed' {
    return this.server === null ? 'closed' : this.holding ? 'held' : 'open';
  }

  /** Client connections open right now. */
  get connections(): number {
    return this.links.size;
  }

  private listen(port: number): Promise<void> {
    const server = net.createServer((client) => this.link(client));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        this.server = server;
        this.port = (server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  private link(client: net.Socket): void {
    this.accepted++;
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    const link: Link = { client, upstream, ready: false, opaque: false, expectAnswer: false, sawClientData: false, scan: Buffer.alloc(0), held: [] };
    this.links.add(link);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    // Either side failing or ending takes the other one down with it.
    const cut = () => {
      client.destroy();
      upstream.destroy();
      this.links.delete(link);
    };
    for (const socket of [client, upstream]) {
      socket.on('error', cut);
      socket.on('close', cut);
    }

    client.on('data', (chunk: Buffer) => {
      if (!link.sawClientData) {
        link.sawClientData = true;
        link.expectAnswer = chunk.length >= 8 && chunk.readUInt32BE(0) === 8 && ENCRYPTION_REQUESTS.has(chunk.readUInt32BE(4));
      }
      if (this.holding && link.ready) {
        link.held.push(chunk);
        this.heldBytes += chunk.length;
        client.pause();
        return;
      }
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once('drain', () => {
          if (!(this.holding && link.ready)) client.resume();
        });
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!link.ready && !link.opaque) this.follow(link, chunk);
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
  }

  /** Follows the server's messages of a new connection up to its first ReadyForQuery. */
  private follow(link: Link, chunk: Buffer): void {
    let scan = link.scan.length === 0 ? chunk : Buffer.concat([link.scan, chunk]);
    if (link.expectAnswer) {
      link.expectAnswer = false;
      if (scan[0] !== NO_ENCRYPTION) {
        link.opaque = true;
        this.opaqueLinks++;
        link.scan = Buffer.alloc(0);
        return;
      }
      scan = scan.subarray(1);
    }
    // Each message: a type byte, then an Int32 length that counts itself but not the type byte.
    let offset = 0;
    while (scan.length - offset >= 5) {
      if (scan[offset] === READY_FOR_QUERY) {
        link.ready = true;
        link.scan = Buffer.alloc(0);
        return;
      }
      const length = scan.readUInt32BE(offset + 1);
      if (scan.length - offset < 1 + length) break;
      offset += 1 + length;
    }
    link.scan = Buffer.from(scan.subarray(offset));
  }

  /** Holds back every query from now on (see the header); new connections still connect. */
  hold(): void {
    this.holding = true;
    this.heldBytes = 0;
  }

  /** Sends what was held and lets bytes flow again. */
  release(): void {
    this.holding = false;
    for (const link of this.links) {
      for (const chunk of link.held) link.upstream.write(chunk);
      link.held = [];
      link.client.resume();
    }
  }

  /** Stops listening (new connections are refused) and cuts every open connection. */
  async close(): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const link of this.links) {
      link.client.destroy();
      link.upstream.destroy();
    }
    this.links.clear();
    await closed;
  }

  /** Listens again on the same port. */
  async reopen(): Promise<void> {
    if (this.server !== null) return;
    await this.listen(this.port);
  }

  /** Closes for good (releasing a hold first, so nothing waits on it). */
  async stop(): Promise<void> {
    this.release();
    await this.close();
  }
}
