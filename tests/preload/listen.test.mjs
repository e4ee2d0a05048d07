// Listen routing and the readiness report, with the test as pminit: a
// declared port or path listens on the inherited fd, another port is asked
// of pminit and served by the handle in its answer, an error answer is the
// server's 'error', listen(0) stays the worker's own.
import assert from 'node:assert/strict';
import dns from 'node:dns/promises';
import os from 'node:os';
import { test } from 'node:test';

import { connect, startWorker, tcpSocket, unixSocket } from './harness.mjs';

const noListenRequests = (w) => assert.deepEqual(w.seen().filter((m) => m?.pminit === 'listen'), []);

for (const args of [(p) => [p], (p) => [{ port: String(p), host: '0.0.0.0' }]]) {
  test(`listen(${JSON.stringify(args('PORT'))}) on a declared port uses the inherited fd and reports readiness`, async (t) => {
    const sock = await tcpSocket(t);
    const w = startWorker(t, 'http.mjs', {
      sockets: [sock],
      env: {
        PMINIT_IPC: '1',
        PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, port: sock.port, host: '127.0.0.1' }]),
        APP_LISTEN: JSON.stringify(args(sock.port)),
      },
    });
    assert.deepEqual(await w.pminit('listening'), { pminit: 'listening', port: sock.port });
    const listening = await w.app('listening');
    // Our copy is closed: only the worker's fd accepts there.
    assert.deepEqual(listening.address, { address: '127.0.0.1', family: 'IPv4', port: sock.port });
    const c = await connect(t, sock.port);
    c.request();
    assert.equal((await c.response()).body, `pid=${w.child.pid}`);
    await w.ping();
    noListenRequests(w);
  });
}

test('listen(path) on a declared unix socket uses the inherited fd', async (t) => {
  const sock = await unixSocket(t);
  const w = startWorker(t, 'http.mjs', {
    sockets: [sock],
    env: {
      PMINIT_IPC: '1',
      PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, path: sock.path }]),
      APP_LISTEN: JSON.stringify([sock.path]),
    },
  });
  assert.deepEqual(await w.pminit('listening'), { pminit: 'listening', port: null });
  await w.app('listening');
  const c = await connect(t, sock.path);
  c.request();
  assert.equal((await c.response()).body, `pid=${w.child.pid}`);
});

for (const declared of [false, true]) {
  test(`another port is asked of pminit, whose handle makes the server listen (declared: ${declared})`, async (t) => {
    const sock = await tcpSocket(t);
    const w = startWorker(t, 'http.mjs', {
      env: {
        PMINIT_IPC: '1',
        PMINIT_NODE_LISTEN: '[]',
        APP_LISTEN: JSON.stringify([sock.port, '127.0.0.1']),
      },
    });
    const ask = await w.pminit('listen');
    assert.deepEqual(ask, { pminit: 'listen', id: 1, port: sock.port, host: '127.0.0.1' });
    await w.answer(ask.id, sock, { declared });
    const listening = await w.app('listening');
    assert.equal(listening.address.port, sock.port);
    const c = await connect(t, sock.port);
    c.request();
    assert.equal((await c.response()).body, `pid=${w.child.pid}`);
    // Only a declared socket is a readiness report.
    await w.ping();
    const reports = w.seen().filter((m) => m?.pminit === 'listening');
    assert.deepEqual(reports, declared ? [{ pminit: 'listening', port: sock.port }] : []);
    // pminit's NODE_ messages never reach the app's own 'message' listeners.
    w.child.send('echo');
    await w.app('message');
    assert.deepEqual(w.seen().filter((m) => m?.app === 'message').map((m) => m.m), ['echo']);
  });
}

test('an error answer is the server\'s error, with its code; an answer to another id is dropped', async (t) => {
  const port = (await tcpSocket(t)).port; // a number only: the answer is an error
  const w = startWorker(t, 'http.mjs', {
    env: { PMINIT_IPC: '1', APP_LISTEN: JSON.stringify([{ port, host: '127.0.0.1' }]) },
  });
  const ask = await w.pminit('listen');
  w.child.send({ cmd: 'NODE_PMINIT_LISTEN', id: ask.id + 1, error: { code: 'EPERM', message: 'stale' } });
  w.child.send({ cmd: 'NODE_PMINIT_LISTEN', id: ask.id, error: { code: 'EACCES', message: 'not yours' } });
  const error = await w.app('error');
  assert.equal(error.code, 'EACCES');
  assert.equal(error.errno, -os.constants.errno.EACCES);
  assert.equal(error.syscall, 'listen');
  assert.equal(error.address, '127.0.0.1');
  assert.equal(error.port, port);
  assert.match(error.message, /^listen EACCES: not yours \(pminit\) 127\.0\.0\.1:\d+$/);
  await w.ping();
  assert.equal(w.seen().filter((m) => m?.app === 'error').length, 1);
});

test('a host name is resolved as Node would before pminit is asked', async (t) => {
  const port = (await tcpSocket(t)).port;
  const w = startWorker(t, 'http.mjs', {
    env: { PMINIT_IPC: '1', APP_LISTEN: JSON.stringify([port, 'localhost']) },
  });
  const ask = await w.pminit('listen');
  assert.equal(ask.host, (await dns.lookup('localhost')).address);
  w.child.send({ cmd: 'NODE_PMINIT_LISTEN', id: ask.id, error: { code: 'EADDRINUSE', message: 'x' } });
  assert.equal((await w.app('error')).code, 'EADDRINUSE');
});

test('listen(0) stays the worker\'s own: nothing asked, nothing reported', async (t) => {
  const sock = await tcpSocket(t);
  const w = startWorker(t, 'http.mjs', {
    sockets: [sock],
    env: {
      PMINIT_IPC: '1',
      PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, port: sock.port, host: '127.0.0.1' }]),
      APP_LISTEN: JSON.stringify([0, '127.0.0.1']),
    },
  });
  const { address } = await w.app('listening');
  assert.notEqual(address.port, 0);
  assert.notEqual(address.port, sock.port);
  const c = await connect(t, address.port);
  c.request();
  assert.equal((await c.response()).body, `pid=${w.child.pid}`);
  await w.ping();
  noListenRequests(w);
  assert.deepEqual(w.seen().filter((m) => m?.pminit === 'listening'), []);
});

test('a launcher that never listens (npm) passes the sockets and the channel to the app', async (t) => {
  const sock = await tcpSocket(t);
  const w = startWorker(t, 'launcher.mjs', {
    sockets: [sock],
    env: {
      PMINIT_IPC: '1',
      PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, port: sock.port, host: '127.0.0.1' }]),
      APP_LISTEN: JSON.stringify([sock.port]),
    },
  });
  // The launcher's own hello, then the app's report and its process.send,
  // both written on the channel fd it was passed.
  assert.deepEqual(await w.pminit('alive'), { pminit: 'alive' });
  assert.deepEqual(await w.pminit('listening'), { pminit: 'listening', port: sock.port });
  const listening = await w.app('listening');
  assert.equal(listening.address.port, sock.port);
  const c = await connect(t, sock.port);
  c.request();
  const body = (await c.response()).body;
  assert.match(body, /^pid=\d+$/);
  assert.notEqual(body, `pid=${w.child.pid}`, 'the app answers, not the launcher');
});
