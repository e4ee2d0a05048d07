// The drain on the stop signal: keep-alive responses get `Connection:
// close`, quiet keep-alive connections are closed, WebSockets get a close
// frame (1001) and HTTP/2 sessions a GOAWAY; an app without a handler ends
// by the signal once its last connection is gone, an app's own handler
// runs its own shutdown.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { test } from 'node:test';

import { connect, startWorker, tcpSocket, within, ws } from './harness.mjs';

// A worker on a declared socket (its port also in APP_PORT), listening.
async function serving(t, app, env = {}) {
  const sock = await tcpSocket(t);
  const w = startWorker(t, app, {
    sockets: [sock],
    env: {
      PMINIT_IPC: '1',
      PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, port: sock.port, host: '127.0.0.1' }]),
      APP_LISTEN: JSON.stringify([sock.port]),
      APP_PORT: String(sock.port),
      ...env,
    },
  });
  await w.pminit('listening');
  await w.app('listening');
  return { w, port: sock.port };
}

// A connection that has had one keep-alive answer.
async function keptAlive(t, port) {
  const c = await connect(t, port);
  c.request();
  assert.equal((await c.response()).headers.connection, 'keep-alive');
  return c;
}

// A GET /hold the app has received and not answered yet.
async function holding(t, w, port) {
  const c = await connect(t, port);
  c.request('/hold');
  await w.app('held');
  return c;
}

// Sends the stop signal and waits until the drain is under way: a quiet
// keep-alive connection is closed by the worker. (A ping answered after the
// signal proves nothing: the kernel may hand a process's signal to any of
// its threads, and that one may run late.)
async function stopAndDrain(t, w, port, signal = 'SIGINT') {
  const quiet = await keptAlive(t, port);
  w.child.kill(signal);
  await quiet.ended();
  assert.equal(quiet.rest(), '', 'closed having sent nothing');
}

test('without a handler of its own: Connection: close, quiet keep-alive closed, ends by SIGINT', async (t) => {
  const { w, port } = await serving(t, 'http.mjs');
  const busy = await keptAlive(t, port);
  const held = await holding(t, w, port);
  // The next request has begun: a connection mid-request is not idle.
  busy.write('GET / HTTP/1.1\r\n');
  await stopAndDrain(t, w, port);
  // A request that arrives while draining is answered, and closes.
  busy.write('Host: test\r\n\r\n');
  assert.equal((await busy.response()).headers.connection, 'close');
  await busy.ended();
  // So does a response that was under way.
  w.child.send('release');
  assert.equal((await held.response()).headers.connection, 'close');
  await held.ended();
  assert.deepEqual(await w.exited(), { code: null, signal: 'SIGINT' });
});

test('with a handler of its own: it runs, quiet keep-alive is closed, its close callback ends it', async (t) => {
  const { w, port } = await serving(t, 'http.mjs', { APP_HANDLER: '1' });
  const busy = await keptAlive(t, port);
  const quiet = await keptAlive(t, port);
  busy.write('GET / HTTP/1.1\r\n');
  w.child.kill('SIGINT');
  await w.app('handler');
  busy.write('Host: test\r\n\r\n');
  assert.equal((await busy.response()).headers.connection, 'close');
  await quiet.ended();
  await w.app('closed');
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

test('the stop signal is PMINIT_STOP_SIGNAL\'s', async (t) => {
  const { w, port } = await serving(t, 'http.mjs', { PMINIT_STOP_SIGNAL: 'SIGTERM' });
  const held = await holding(t, w, port);
  await stopAndDrain(t, w, port, 'SIGTERM');
  w.child.send('release');
  assert.equal((await held.response()).headers.connection, 'close');
  assert.deepEqual(await w.exited(), { code: null, signal: 'SIGTERM' });
});

test('a server that listened twice drains once', async (t) => {
  // On a declared socket, closed, then on a port asked of pminit: the stop
  // signal must still drain, not end the worker at once under the request
  // it holds.
  const first = await tcpSocket(t);
  const second = await tcpSocket(t);
  const w = startWorker(t, 'http.mjs', {
    sockets: [first],
    env: {
      PMINIT_IPC: '1',
      PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, port: first.port, host: '127.0.0.1' }]),
      APP_LISTEN: JSON.stringify([first.port]),
      APP_LISTEN_AGAIN: JSON.stringify([second.port, '127.0.0.1']),
    },
  });
  await w.answer((await w.pminit('listen')).id, second);
  await w.app('listening');
  const held = await holding(t, w, second.port);
  await stopAndDrain(t, w, second.port);
  w.child.send('release');
  assert.equal((await held.response()).headers.connection, 'close');
  assert.deepEqual(await w.exited(), { code: null, signal: 'SIGINT' });
});

test('a ws WebSocket is closed with 1001, going away', async (t) => {
  const { w, port } = await serving(t, 'ws.mjs');
  const client = new ws.WebSocket(`ws://127.0.0.1:${port}`);
  t.after(() => client.terminate());
  const [hello] = await within(once(client, 'message'), 'the hello');
  assert.equal(hello.toString(), 'hello');
  const closed = once(client, 'close');
  w.child.kill('SIGINT');
  const [code, reason] = await within(closed, 'the close frame');
  assert.equal(code, 1001);
  assert.equal(reason.toString(), 'server going away');
  assert.deepEqual(await w.exited(), { code: null, signal: 'SIGINT' });
});

test('an upgrade the app completed by hand gets a raw close frame, 1001', async (t) => {
  const { w, port } = await serving(t, 'upgrade_raw.mjs');
  const socket = net.connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  await within(once(socket, 'connect'), 'connecting');
  socket.write('GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  const chunks = [];
  socket.on('data', (b) => chunks.push(b));
  const ended = once(socket, 'end');
  const [head] = await within(once(socket, 'data'), 'the 101');
  assert.match(head.toString('latin1'), /^HTTP\/1\.1 101 /);
  w.child.kill('SIGINT');
  await within(ended, 'the close frame and the end');
  const all = Buffer.concat(chunks);
  const frame = all.subarray(all.indexOf('\r\n\r\n') + 4);
  assert.deepEqual([...frame], [0x88, 0x02, 0x03, 0xe9]);
  assert.deepEqual(await w.exited(), { code: null, signal: 'SIGINT' });
});

test('an HTTP/2 session gets a GOAWAY', async (t) => {
  const { w, port } = await serving(t, 'h2.mjs');
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.after(() => session.destroy());
  session.on('error', () => {});
  const req = session.request({ ':path': '/' });
  req.setEncoding('utf8');
  let body = '';
  req.on('data', (s) => { body += s; });
  await within(once(req, 'end'), 'the HTTP/2 response');
  assert.equal(body, `pid=${w.child.pid}`);
  const goaway = once(session, 'goaway');
  w.child.kill('SIGINT');
  const [errorCode] = await within(goaway, 'the GOAWAY');
  assert.equal(errorCode, http2.constants.NGHTTP2_NO_ERROR);
  await within(once(session, 'close'), 'the session to close');
  assert.deepEqual(await w.exited(), { code: null, signal: 'SIGINT' });
});
