// The test process plays pminit: it holds listening sockets, starts a
// worker with the preload exactly as pminit does (NODE_OPTIONS with the
// base64 data: URL of src/preload.mjs, the sockets from fd 3, the IPC
// channel after them, the PMINIT_* variables) and speaks to it over the
// channel with Node's own child.send, which writes the same lines pminit
// writes (a NODE_HANDLE line with the fd for a handle). Everything is on
// 127.0.0.1 or a unix socket, and every wait has a deadline.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');

/** The longest wait for any one event. */
export const DEADLINE_MS = 5000;

/** NODE_OPTIONS as src/node.rs builds it (the sourceURL names it in traces). */
export const PRELOAD_OPTIONS = (() => {
  const source = fs.readFileSync(path.join(root, 'src/preload.mjs'), 'utf8');
  const named = `${source}\n//# sourceURL=pminit:preload\n`;
  return `--import=data:text/javascript;base64,${Buffer.from(named).toString('base64')}`;
})();

/** The `ws` package the Node test apps pin (tests/node-app/package.json). */
export const ws = createRequire(path.join(root, 'tests/node-app/'))('ws');

export const fixture = (name) => path.join(here, 'fixtures', name);

/** Resolves with `promise`, or rejects naming `what` after `ms`. */
export function within(promise, what, ms = DEADLINE_MS, context = () => '') {
  const signal = AbortSignal.timeout(ms);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error(`${what}: nothing within ${ms} ms${context()}`));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** A TCP listening socket on 127.0.0.1, as pminit binds one. */
export async function tcpSocket(t) {
  const server = net.createServer();
  server.listen({ port: 0, host: '127.0.0.1' });
  await within(once(server, 'listening'), 'our own listen');
  t.after(() => server.close());
  const close = () => server.close();
  return { server, close, port: server.address().port, fd: server._handle.fd };
}

/** A unix listening socket in a fresh directory. */
export async function unixSocket(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pminit-preload-'));
  const file = path.join(dir, 'app.sock');
  const server = net.createServer();
  server.listen(file);
  await within(once(server, 'listening'), 'our own unix listen');
  t.after(() => {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // Closing a unix server removes its file (libuv, at once): move it
  // aside for that, as the worker's copy still listens there.
  const close = () => {
    fs.renameSync(file, `${file}.kept`);
    server.close();
    fs.renameSync(`${file}.kept`, file);
  };
  return { server, close, path: file, fd: server._handle.fd };
}

/** Messages as they arrive; `next` takes the first one that matches. */
class Inbox {
  constructor(context) {
    this.context = context;
    this.seen = [];
    this.unread = [];
    this.waiting = [];
  }

  push(message, handle) {
    const item = { message, handle };
    this.seen.push(item);
    const i = this.waiting.findIndex((w) => w.match(message));
    if (i < 0) this.unread.push(item);
    else this.waiting.splice(i, 1)[0].resolve(item);
  }

  next(match, what) {
    const i = this.unread.findIndex((item) => match(item.message));
    if (i >= 0) return Promise.resolve(this.unread.splice(i, 1)[0].message);
    const item = new Promise((resolve) => this.waiting.push({ match, resolve }));
    return within(item.then((it) => it.message), what, DEADLINE_MS, this.context);
  }
}

/**
 * Starts `app` (a file in fixtures/) as pminit starts a Node worker:
 * `sockets` (from tcpSocket/unixSocket) at fds 3.., the IPC channel after
 * them, `env` over a bare PATH (a value of undefined leaves a variable
 * out). Our copies of the sockets are closed once the worker has its own,
 * so that only the worker accepts. Killed with its process group at the end.
 */
export function startWorker(t, app, { env = {}, sockets = [], execArgv = [] } = {}) {
  const channelFd = 3 + sockets.length;
  const vars = {
    PATH: process.env.PATH,
    NODE_OPTIONS: PRELOAD_OPTIONS,
    PMINIT_REPORT_FD: String(channelFd),
    ...env,
  };
  for (const [k, v] of Object.entries(vars)) if (v === undefined) delete vars[k];
  const child = fork(fixture(app), [], {
    env: vars,
    execArgv,
    detached: true, // its own process group, so that grandchildren go too
    stdio: ['ignore', 'pipe', 'pipe', ...sockets.map((s) => s.fd), 'ipc'],
  });
  for (const s of sockets) s.close();
  const output = [];
  child.stdout.on('data', (b) => output.push(b));
  child.stderr.on('data', (b) => output.push(b));
  const context = () => `\n--- worker output:\n${Buffer.concat(output).toString()}`;
  const inbox = new Inbox(context);
  child.on('message', (message, handle) => inbox.push(message, handle));
  const exit = once(child, 'exit').then(([code, signal]) => ({ code, signal }));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    await within(exit, 'the worker to die');
  });
  return {
    child,
    inbox,
    context,
    /** Every message received so far. */
    seen: () => inbox.seen.map((item) => item.message),
    /** The next `{pminit: kind}` message. */
    pminit: (kind) => inbox.next((m) => m?.pminit === kind, `{pminit: '${kind}'}`),
    /** The next `{app: event}` message (the fixtures' own reports). */
    app: (event) => inbox.next((m) => m?.app === event, `{app: '${event}'}`),
    /** How it ended: {code, signal}. */
    exited: () => within(exit, 'the worker to exit', DEADLINE_MS, context),
    /**
     * A ping and its answer: the channel is ordered, so whatever the
     * worker sent before handling the ping has arrived by then.
     */
    async ping() {
      child.send({ cmd: 'NODE_PMINIT_PING' });
      return inbox.next((m) => m?.pminit === 'alive' && 'heap_used' in m, 'an answer to a ping');
    },
    /** pminit's answer to a listen request, with the socket's handle. */
    async answer(id, socket, { declared = false } = {}) {
      const message = { cmd: 'NODE_PMINIT_LISTEN', id, address: '127.0.0.1', port: socket.port, declared };
      await within(new Promise((resolve, reject) => {
        child.send(message, socket.server._handle, (err) => (err ? reject(err) : resolve()));
      }), 'sending a handle');
      // Sent: only the worker's copy may accept from now on.
      socket.close();
    },
  };
}

/**
 * A raw HTTP/1.1 client connection, so that keep-alive is ours to watch:
 * `request()` writes one, `response()` reads one (Content-Length bodies).
 */
export async function connect(t, where) {
  const socket = typeof where === 'string' ? net.connect(where) : net.connect(where, '127.0.0.1');
  t.after(() => socket.destroy());
  await within(once(socket, 'connect'), 'connecting');
  let buffered = '';
  let wake = () => {};
  socket.setEncoding('latin1');
  socket.on('data', (s) => {
    buffered += s;
    wake();
  });
  const closed = new Promise((resolve) => socket.once('close', resolve));
  const ended = new Promise((resolve) => socket.once('end', resolve));
  socket.on('error', () => {});
  const parsed = () => {
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [status, ...lines] = buffered.slice(0, end).split('\r\n');
    const headers = Object.fromEntries(lines.map((l) => {
      const colon = l.indexOf(':');
      return [l.slice(0, colon).trim().toLowerCase(), l.slice(colon + 1).trim()];
    }));
    const length = Number(headers['content-length'] ?? 0);
    if (buffered.length < end + 4 + length) return undefined;
    const body = buffered.slice(end + 4, end + 4 + length);
    buffered = buffered.slice(end + 4 + length);
    return { status: Number(status.split(' ')[1]), headers, body };
  };
  return {
    socket,
    write: (text) => socket.write(text),
    request: (target = '/') => socket.write(`GET ${target} HTTP/1.1\r\nHost: test\r\n\r\n`),
    response() {
      const got = new Promise((resolve, reject) => {
        const check = () => {
          const r = parsed();
          if (r) resolve(r);
          return r;
        };
        if (check()) return;
        wake = check;
        closed.then(() => check() || reject(new Error(`closed before a response: ${JSON.stringify(buffered)}`)));
      });
      return within(got, 'an HTTP response');
    },
    /** Bytes received and not yet read as a response. */
    rest: () => buffered,
    ended: () => within(ended, 'the server to end the connection'),
    closed: () => within(closed, 'the connection to close'),
  };
}
