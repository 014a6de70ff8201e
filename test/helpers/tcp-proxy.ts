// A TCP proxy between the server and Postgres, to simulate an outage: close() refuses new
// connections and cuts every open one (both directions), reopen() listens again on the same port.
import net from 'node:net';

export class TcpProxy {
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  /** Connections accepted since start (for diagnostics). */
  accepted = 0;
  port = 0;

  private constructor(
    readonly targetHost: string,
    readonly targetPort: number,
  ) {}

  /** Listens on 127.0.0.1:0 and pipes every connection to targetHost:targetPort. */
  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetHost, targetPort);
    await proxy.listen(0);
    return proxy;
  }

  /** A proxy to the host:port of a postgres:// URL. */
  static async forDatabase(databaseUrl: string): Promise<TcpProxy> {
    const url = new URL(databaseUrl);
    return TcpProxy.start(url.hostname || '127.0.0.1', Number(url.port || 5432));
  }

  /** `databaseUrl` with host:port replaced by the proxy's (user, password and database kept). */
  urlFor(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.href;
  }

  get open(): boolean {
    return this.server !== null;
  }

  /** Open client connections right now. */
  get connections(): number {
    return this.sockets.size / 2;
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private listen(port: number): Promise<void> {
    const server = net.createServer((client) => {
      this.accepted++;
      const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
      this.track(client);
      this.track(upstream);
      client.setNoDelay(true);
      upstream.setNoDelay(true);
      // Either side failing or ending takes the other one down with it.
      const cut = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', cut);
      upstream.on('error', cut);
      client.on('close', cut);
      upstream.on('close', cut);
      client.pipe(upstream);
      upstream.pipe(client);
    });
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

  /** Stops listening (new connections are refused) and destroys every open connection. */
  async close(): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.server = null;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Listens again on the same port. */
  async reopen(): Promise<void> {
    if (this.server !== null) return;
    await this.listen(this.port);
  }
}
