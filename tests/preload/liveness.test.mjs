// Liveness over the IPC channel: a hello at start and answers to pings
// (with the V8 heap) when PMINIT_IPC=1, neither without; a memory report
// after a garbage collection past PMINIT_MEMORY_REPORT.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startWorker } from './harness.mjs';

const app = { APP_LISTEN: JSON.stringify([0, '127.0.0.1']) };

test('a hello at start, then pings answered with the heap\'s use and limit', async (t) => {
  const w = startWorker(t, 'http.mjs', { env: { PMINIT_IPC: '1', ...app } });
  assert.deepEqual(await w.pminit('alive'), { pminit: 'alive' });
  assert.deepEqual(w.seen()[0], { pminit: 'alive' }, 'before the app runs');
  for (let i = 0; i < 2; i += 1) {
    const answer = await w.ping();
    assert.deepEqual(Object.keys(answer).sort(), ['heap_limit', 'heap_used', 'pminit']);
    assert.ok(Number.isSafeInteger(answer.heap_used) && answer.heap_used > 0, `${answer.heap_used}`);
    assert.ok(Number.isSafeInteger(answer.heap_limit) && answer.heap_limit > answer.heap_used, `${answer.heap_limit}`);
  }
  // The pings went to the preload only, never to the app's 'message'.
  w.child.send('echo');
  await w.app('message');
  assert.deepEqual(w.seen().filter((m) => m?.app === 'message').map((m) => m.m), ['echo']);
});

test('listening for pings does not keep the worker alive', async (t) => {
  const w = startWorker(t, 'quiet.mjs', { env: { PMINIT_IPC: '1' } });
  await w.pminit('alive');
  await w.app('started');
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

test('without PMINIT_IPC=1 no hello, and pings go unanswered', async (t) => {
  const w = startWorker(t, 'http.mjs', { env: app });
  await w.app('listening');
  w.child.send({ cmd: 'NODE_PMINIT_PING' });
  w.child.send('echo');
  await w.app('message');
  assert.deepEqual(w.seen().filter((m) => m?.pminit !== undefined), []);
  assert.equal(w.seen()[0]?.app, 'started');
});

test('a garbage collection past PMINIT_MEMORY_REPORT is reported', async (t) => {
  const w = startWorker(t, 'http.mjs', {
    env: { PMINIT_IPC: '1', PMINIT_MEMORY_REPORT: '1', ...app },
    execArgv: ['--expose-gc'],
  });
  await w.app('listening');
  w.child.send('gc');
  assert.deepEqual(await w.pminit('memory'), { pminit: 'memory' });
});
