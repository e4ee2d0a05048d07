// src/runtime_preload.mjs on the real Bun and Deno (scripts/test.sh
// installs them into target/bun and target/deno): the drain of a worker
// on the stop signal. The test process plays pminit: it starts the
// runtime as pminit does (Deno: `deno run --preload=data:...
// --unstable-net`; Bun: `BUN_OPTIONS=--preload=data:...`; the settings in
// the preload's first line, the Node IPC channel from NODE_CHANNEL_FD), on
// 127.0.0.1.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { connect, within, ws as WebSocket } from './harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DENO = path.join(root, 'target/deno/node_modules/@deno/linux-x64-glibc/deno');
const BUN = path.join(root, 'target/bun/node_modules/@oven/bun-linux-x64/bin/bun');

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

const DENO_SERVE = `
Deno.serve({ hostname: '127.0.0.1', port: Number(Deno.env.get('PORT')), onListen() {} },
  async (request) => new Response('pid=' + Deno.pid + ' ' + new URL(request.url).pathname + '\\n'));
`;
const DENO_WEBSOCKET = `
Deno.serve({ hostname: '127.0.0.1', port: Number(Deno.env.get('PORT')), onListen() {} }, (request) => {
  if (request.headers.get('upgrade') !== 'websocket') return new Response('http\\n');
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.onmessage = (e) => socket.send('echo:' + e.data);
  return response;
});
`;
const BUN_SERVE = `
Bun.serve({ hostname: '127.0.0.1', fetch: (request) => new Response('pid=' + process.pid + ' ' + new URL(request.url).pathname + '\\n') });
`;
const NODE_HTTP = `
import http from 'node:http';
http.createServer((req, res) => res.end('pid=' + process.pid + ' ' + req.url + '\\n')).listen(Number(process.env.PORT), '127.0.0.1');
`;

// How pminit starts each runtime with the preload.
const RUNTIMES = {
  deno: {
    binary: DENO,
    start: (url, app) => [DENO, ['run', `--preload=${url}`, '--unstable-net', '-A', app], {}],
  },
  bun: {
    binary: BUN,
    start: (url, app) => [BUN, [app], { BUN_OPTIONS: `--preload=${url}` }],
  },
};

// A worker of `runtime` running `source` with the preload, listening on
// its port.
async function worker(t, runtime, source) {
  const { binary, start } = RUNTIMES[runtime];
  if (!fs.existsSync(binary)) {
    if (process.env.PMINIT_TEST_STRICT) throw new Error(`needs ${binary} (scripts/test.sh installs it)`);
    t.skip(`needs ${binary} (scripts/test.sh installs it)`);
    return undefined;
  }
  const port = await freePort();
  const app = `data:text/javascript;base64,${Buffer.from(source).toString('base64')}`;
  const [file, args, env] = start(preloadUrl(port), app);
  const child = spawn(file, args, {
    env: { ...process.env, ...env, PORT: String(port), NO_COLOR: '1' },
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

const denoWorker = (t) => worker(t, 'deno', DENO_SERVE);

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
  // Answered once, so accepted: one still in the kernel's queue when the
  // listener closes goes with it (to another worker's socket, when there
  // is one and tcp_migrate_req is 1).
  const busy = await connect(t, w.port);
  busy.request('/first');
  assert.equal((await busy.response()).status, 200);
  await stopWhileAsking(w, busy);
  // Draining, and the only worker on the port: nothing accepts any more.
  const refused = net.connect(w.port, '127.0.0.1');
  const [error] = await within(once(refused, 'error'), 'a refused connection');
  assert.equal(error.code, 'ECONNREFUSED');
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

// Bun.serve and node:http on Bun and Deno: the stop signal does not end a
// keep-alive connection under a request on its way; answers carry
// Connection: close until the client has gone, then the worker exits 0.
for (const [name, runtime, source] of [
  ['Bun.serve', 'bun', BUN_SERVE],
  ['node:http on Bun', 'bun', NODE_HTTP],
  ['node:http on Deno', 'deno', NODE_HTTP],
]) {
  test(`${name} drain: keep-alive answers carry Connection: close, then exit 0`, async (t) => {
    const w = await worker(t, runtime, source);
    if (!w) return;
    const keptAlive = await connect(t, w.port);
    keptAlive.request('/first');
    const first = await keptAlive.response();
    assert.equal(first.status, 200);
    assert.notEqual(first.headers.connection, 'close');
    await stopWhileAsking(w, keptAlive);
    await keptAlive.closed();
    assert.deepEqual(await w.exited(), { code: 0, signal: null });
  });
}

// A WebSocket to `port` that sends `text`: {socket, echo} once answered,
// or {closed: code} if it closes first.
function webSocket(t, port, text) {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`);
  t.after(() => socket.terminate());
  const outcome = new Promise((resolve) => {
    socket.once('open', () => socket.send(text));
    socket.once('message', (data) => resolve({ socket, echo: String(data) }));
    socket.once('close', (code) => resolve({ closed: code }));
    socket.once('error', () => {});
  });
  return within(outcome, 'a WebSocket echo or close');
}

test('Deno.serve WebSockets: the first upgrade turns the worker to Deno.serve itself, where they work and get 1001 on the stop signal', async (t) => {
  const w = await worker(t, 'deno', DENO_WEBSOCKET);
  if (!w) return;
  // Lost: Deno's one-connection server force-closes a WebSocket once the
  // connection's HTTP part is over (src/runtime_preload.mjs, DenoServer).
  // If this starts to pass, Deno has fixed it: keep the one-connection
  // server for WebSockets too.
  assert.deepEqual(await webSocket(t, w.port, 'first'), { closed: 1006 });
  const second = await webSocket(t, w.port, 'second');
  assert.equal(second.echo, 'echo:second');
  const c = await connect(t, w.port);
  c.request('/');
  assert.equal((await c.response()).body, 'http\n');
  const closed = new Promise((resolve) => second.socket.once('close', resolve));
  w.child.kill('SIGINT');
  assert.equal(await within(closed, 'the close frame'), 1001);
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

const BUN_WEBSOCKET = `
Bun.serve({
  hostname: '127.0.0.1',
  fetch(request, server) {
    if (server.upgrade(request)) return undefined;
    return new Response('http\\n');
  },
  websocket: { message(socket, text) { socket.send('echo:' + text); } },
});
`;

test('Bun.serve WebSockets work and get 1001 on the stop signal; the worker exits 0', async (t) => {
  const w = await worker(t, 'bun', BUN_WEBSOCKET);
  if (!w) return;
  const first = await webSocket(t, w.port, 'first');
  assert.equal(first.echo, 'echo:first');
  const second = await webSocket(t, w.port, 'second');
  assert.equal(second.echo, 'echo:second');
  const closes = [first, second].map(({ socket }) => new Promise((resolve) => socket.once('close', resolve)));
  w.child.kill('SIGINT');
  assert.deepEqual(await within(Promise.all(closes), 'the close frames'), [1001, 1001]);
  assert.deepEqual(await w.exited(), { code: 0, signal: null });
});

// node:http with its own 'upgrade' handler (no WebSocket library): the
// raw upgraded socket, as ws and socket.io keep it.
const NODE_HTTP_RAW_WEBSOCKET = `
import http from 'node:http';
import crypto from 'node:crypto';
const server = http.createServer((req, res) => res.end('http\\n'));
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1')
    .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n' +
    'Sec-WebSocket-Accept: ' + accept + '\\r\\n\\r\\n');
  const text = Buffer.from('echo:hello');
  socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
  socket.on('data', () => {});
  socket.on('error', () => {});
});
server.listen(Number(process.env.PORT), '127.0.0.1');
`;

for (const runtime of ['bun', 'deno']) {
  test(`node:http on ${runtime}: a raw upgraded WebSocket gets 1001 on the stop signal and the worker exits 0`, async (t) => {
    const w = await worker(t, runtime, NODE_HTTP_RAW_WEBSOCKET);
    if (!w) return;
    const open = await webSocket(t, w.port, 'hello');
    assert.equal(open.echo, 'echo:hello');
    const closed = new Promise((resolve) => open.socket.once('close', resolve));
    w.child.kill('SIGINT');
    assert.equal(await within(closed, 'the close frame'), 1001);
    assert.deepEqual(await w.exited(), { code: 0, signal: null });
  });
}
