// The PMINIT_* variables leave the app's environment once used, so that
// the app's own children never take pminit's sockets or speak to pminit.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startWorker, tcpSocket } from './harness.mjs';

test('PMINIT_IPC and PMINIT_MEMORY_REPORT go at start, the rest at the first listen', async (t) => {
  const sock = await tcpSocket(t);
  const w = startWorker(t, 'http.mjs', {
    sockets: [sock],
    env: {
      PMINIT_IPC: '1',
      PMINIT_MEMORY_REPORT: String(1 << 30),
      PMINIT_STOP_SIGNAL: 'SIGINT',
      PMINIT_NODE_LISTEN: JSON.stringify([{ fd: 3, port: sock.port, host: '127.0.0.1' }]),
      APP_LISTEN: JSON.stringify([sock.port]),
    },
  });
  // Before it listens the app may still be a launcher (npm), whose children
  // need the sockets, the channel's number and the stop signal.
  assert.deepEqual((await w.app('started')).env, ['PMINIT_NODE_LISTEN', 'PMINIT_REPORT_FD', 'PMINIT_STOP_SIGNAL']);
  assert.deepEqual((await w.app('listening')).env, []);
});
