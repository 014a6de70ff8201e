// The only importer of uWebSockets.js. The npm build we use silently falls back to a slow
// pure-JS server when its native addon fails to load; we refuse to run on that fallback.
import net from 'node:net';
import uWS from 'uWebSockets.js';

export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from 'uWebSockets.js';

if (!String(uWS.App).includes('[native code]')) {
  throw new Error('uWebSockets.js native addon did not load (pure-JS fallback detected); refusing to start');
}

export const createApp = (): uWS.TemplatedApp => uWS.App();
export const closeListenSocket = (socket: uWS.us_listen_socket): void => uWS.us_listen_socket_close(socket);
export const listenPort = (socket: uWS.us_listen_socket): number => uWS.us_socket_local_port(socket);

/**
 * uWS sets SO_REUSEPORT only on a fixed port: with PORT=0 the other acceptor threads could not
 * join the ephemeral port. So PORT=0 is resolved to a free port first, then everyone binds it.
 */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    uWS.App().listen(host, 0, (socket) => {
      if (!socket) return reject(new Error(`cannot listen on ${host}:0`));
      const port = uWS.us_socket_local_port(socket);
      uWS.us_listen_socket_close(socket);
      resolve(port);
    });
  });
}

/**
 * uWS binds with SO_REUSEPORT, so a second server on a taken port would start without error and
 * the kernel would split the connections between the two. A plain bind (no SO_REUSEPORT) fails
 * on a port anyone holds, and tells.
 */
export function assertPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new Error(`port ${port} on ${host} is already in use`) : error));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * Force-closes every connection of the app (present on the native app, missing from this
 * build's typings). Worker threads must do it before they end: a uWS loop still holding a
 * socket aborts the process ("uv_loop_close() while having open handles"). Not on the main
 * thread, where it also tears down Node's own handles (signal handlers included).
 */
export const closeConnections = (app: uWS.TemplatedApp): void => (app as uWS.TemplatedApp & { close(): void }).close();
