// Without DATABASE_URL the server runs its own Postgres under DATA_DIR: the first start
// initialises it, a second start reuses it (keys and events are still there).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freeLocalPort } from '../src/db/embedded.ts';
import { TestServer, waitFor } from './helpers/server.ts';

const embedded = suite('embedded postgres');

embedded('no DATABASE_URL: first start initialises Postgres under DATA_DIR, a second start reuses its data', async () => {
  // An empty DATABASE_URL counts as unset.
  const server = await TestServer.start('', { EMBEDDED_POSTGRES_PORT: String(await freeLocalPort()) });
  try {
    assert.ok(server.logs.some((line) => line.includes('initialising embedded postgres')), 'first start initialises');
    const { key } = await server.createKey('pro');
    const sent = await server.request('POST', '/api/events', { key, body: { type: 'embedded.check', payload: { n: 1 } } });
    assert.is(sent.status, 202, sent.text);
    await waitFor('the event to reach the embedded Postgres', async () => {
      const inbox = await server.request('GET', '/api/inbox', { key });
      return inbox.body?.events?.some((event: { id: string }) => event.id === sent.body.id);
    });
    assert.is(await server.stop(), 0, 'graceful stop, embedded Postgres stopped with it');

    const before = server.logs.length;
    await server.boot();
    const restarted = server.logs.slice(before);
    assert.not.ok(restarted.some((line) => line.includes('initialising embedded postgres')), 'second start does not initialise again');
    const read = await server.request('GET', `/api/events/${sent.body.id}`, { key });
    assert.is(read.status, 200, read.text);
    assert.equal(read.body.payload, { n: 1 });
  } finally {
    await server.close();
  }
});

embedded.run();
