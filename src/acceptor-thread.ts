// Entry of acceptor threads 1..N-1 (the main thread is acceptor 0).
import { parentPort, workerData } from 'node:worker_threads';
import { createContext, startAcceptor } from './acceptor.ts';
import type { AcceptorInit, AcceptorToMain, MainToAcceptor } from './protocol.ts';

const port = parentPort!;
const post = (message: AcceptorToMain) => port.postMessage(message);
const init = workerData as AcceptorInit;

try {
  const ctx = await createContext(init.config, init.databaseUrl, init.shared, init.index);
  const acceptor = await startAcceptor(ctx, init.port);
  port.on('message', async (message: MainToAcceptor) => {
    if (message.kind !== 'close') return;
    await acceptor.close();
    await ctx.log.close();
    acceptor.closeConnections();
    post({ kind: 'closed' });
    port.close();
  });
  post({ kind: 'listening' });
} catch (error) {
  post({ kind: 'fatal', message: error instanceof Error ? error.message : String(error) });
}
