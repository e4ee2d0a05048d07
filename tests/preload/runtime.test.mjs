// src/runtime_preload.mjs on the real Deno (scripts/test.sh installs it
// into target/deno): the drain of a Deno.serve worker on the stop signal.
// The test process plays pminit: it starts Deno as pminit does (`deno run
// --preload=data:... --unstable-net`, the settings in the preload's first
// line, the Node IPC channel from NODE_CHANNEL_FD), on 127.0.0.1.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { connect, within } from './harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DENO = path.join(root, 'target/deno/node_modules/@deno/linux-x64-glibc/deno');

// The preload as src/runtime.rs builds it (comments are kept here).
function preloadUrl(port) {
  const source = fs.readFileSync(path.join(root, 'src/runtime_preload.mjs'), 'utf8');
  const settings = JSON.stringify({ port, stopSignal: 'SIGINT' });
  const text = `const PMINIT = ${settings};\n${source}\n//# sourceURL=pminit:runtime-preload\n`;
  return `data:text/javascript;base64,${Buffer.from(text).toString('base64')}`;
}

async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await within(once(server, 'listening'), 'a free port');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const APP = `
Deno.serve({ hostname: '127.0.0.1', port: Number(Deno.env.get('PORT')), onListen() {} },
  async (request) => new Response('pid=' + Deno.pid + ' ' + new URL(request.url).pathname + '\\n'));
`;

// A Deno.serve worker with the preload, listening on its port.
async function denoWorker(t) {
  if (!fs.existsSync(DENO)) {
    if (process.env.PMINIT_TEST_STRICT) throw new Error(`needs ${DENO} (scripts/test.sh installs it)`);
    t.skip(`needs ${DENO} (scripts/test.sh installs it)`);
    return undefined;
  }
  const port = await freePort();
  const app = `data:text/javascript;base64,${Buffer.from(APP).toString('base64')}`;
  const child = spawn(DENO, ['run', `--preload=${preloadUrl(port)}`, '--unstable-net', '-A', app], {
    env: { ...process.env, PORT: String(port), NO_COLOR: '1' },
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => {
    stderr += s;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.after(() => child.kill('SIGKILL'));
  const listening = new Promise((resolve) => child.on('message', (m) => m && m.pminit === 'listening' && resolve()));
  await within(listening, 'the worker to report listening', 10_000, () => `; stderr: ${stderr}`);
  return { child, port, exited: () => within(exited, 'the worker to exit', 10_000, () => `; stderr: ${stderr}`) };
}

// Sends the stop signal, then asks on `c` until an answer carries
// `Connection: close` (the drain is under way): every ask is answered.
async function stopWhileAsking(w, c) {
  w.child.kill('SIGINT');
  for (let i = 0; i < 1000; i += 1) {
    c.request(`/ask${i}`);
    const r = await c.response();
    assert.equal(r.status, 200);
    if (r.headers.connection === 'close') return;
  }
  assert.fail('no answer with Connection: close after the stop signal');
}

test('Deno.serve drain: a connection accepted before the stop signal and silent till then is answered', async (t) => {
  const w = await denoWorker(t);
  if (!w) return;
  const keptAlive = await connect(t, w.port);
  // Connected, and accepted: the accept queue is first in, first out, and
  // a connection opened after it has been answered.
  const silent = await connect(t, w.port);
  const later = await connect(t, w.port);
  later.request('/later');
  assert.equal((await later.response()).status, 200);
  await stopWhileAsking(w, keptAlive);
  silent.request('/silent');
  const r = await silent.response();
  assert.equal(r.status, 200);
  assert.match(r.body, /\/silent/);
  assert.equal(r.headers.connection, 'close');
  await silent.closed();
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

test('Deno.serve drain: a quiet keep-alive connection is ended, then the worker exits 0', async (t) => {
  const w = await denoWorker(t);
  if (!w) return;
  const quiet = await connect(t, w.port);
  quiet.request('/first');
  const first = await quiet.response();
  assert.equal(first.status, 200);
  assert.notEqual(first.headers.connection, 'close');
  w.child.kill('SIGINT');
  await quiet.closed();
  assert.equal(quiet.rest(), '');
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

test('Deno.serve drain: the listener closes at once, so new connections go elsewhere', async (t) => {
  const w = await denoWorker(t);
  if (!w) return;
  const busy = await connect(t, w.port);
  await stopWhileAsking(w, busy);
  // Draining, and the only worker on the port: nothing accepts any more.
  const refused = net.connect(w.port, '127.0.0.1');
  const [error] = await within(once(refused, 'error'), 'a refused connection');
  assert.equal(error.code, 'ECONNREFUSED');
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});
