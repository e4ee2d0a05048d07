// pminit's preload for Node workers, loaded through
// NODE_OPTIONS=--import=data:text/javascript;base64,... (so it may import
// only node: builtins). It does four things, none of which the app has to
// know about:
//
// 1. listen: an unmodified `server.listen(PORT)` (or `listen({port})`,
//    `listen(path)`) on a port or path pminit holds becomes
//    `listen({fd})`, so N workers share pminit's socket. The map travels in
//    PMINIT_NODE_LISTEN as JSON, [{fd, port, host, any?} | {fd, path}], and
//    is removed from the environment at the first listen it serves, so the
//    app's own children do not take the same sockets. Any other TCP port
//    (an admin or metrics port), and $PORT at a host the app names, is
//    asked of pminit over the IPC channel; pminit binds it at that host,
//    keeps it for its whole life and hands the same socket to every
//    worker that asks (see ask() below). listen(0) stays the worker's own.
// 2. report: once a server listens on a declared socket (--listen, $PORT),
//    pminit is told (readiness).
// 3. pass-through: a process that never listens (npm, yarn) passes the
//    sockets and the report channel on to the processes it spawns, at the
//    same fd numbers: Node's spawn hands a child only the stdio it is told
//    to, so without this `npm start` would start the app without them.
// 4. drain: once the stop signal (PMINIT_STOP_SIGNAL, SIGINT by default)
//    arrives, whoever handles it: every response written from then on
//    carries `Connection: close`, keep-alive connections that stay quiet
//    are closed, WebSocket connections get a close frame (1001, going
//    away) and HTTP/2 sessions a GOAWAY. When the app has no handler of
//    its own the servers also stop accepting and the process ends as the
//    signal would have ended it, once the last connection is gone; when it
//    has one, the app's shutdown runs as written (its server.close()
//    callback fires once the connections are drained).
// 5. liveness: pminit pings the worker over its IPC channel
//    ({cmd: 'NODE_PMINIT_PING'}, an 'internalMessage'); the answer goes out
//    from this event loop with the V8 heap's use and limit, so a loop stuck
//    in a computation cannot answer. A hello at start says this worker
//    answers. After a garbage collection that leaves the process past
//    PMINIT_MEMORY_REPORT bytes, pminit is asked to look at it now.
import childProcess from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';

const env = process.env;
let sockets = [];
try {
  sockets = env.PMINIT_NODE_LISTEN ? JSON.parse(env.PMINIT_NODE_LISTEN) : [];
} catch {
  sockets = [];
}
if (!Array.isArray(sockets)) sockets = [];
const reportFd = /^[0-9]+$/.test(env.PMINIT_REPORT_FD || '') ? Number(env.PMINIT_REPORT_FD) : undefined;
const stopSignal = env.PMINIT_STOP_SIGNAL || 'SIGINT';

// One JSON line to pminit: through Node's own IPC channel when this process
// has it, else straight onto the inherited channel fd (the app under npm).
function report(message) {
  try {
    if (process.channel && typeof process.send === 'function') {
      process.send(message);
    } else if (reportFd !== undefined) {
      fs.writeSync(reportFd, `${JSON.stringify(message)}\n`);
    }
  } catch {
    // pminit is gone or the fd is not ours: nothing to tell.
  }
}

// Apps written for pm2 call process.send('ready'); under npm the app has no
// channel of its own, so give it one that reaches pminit.
if (typeof process.send !== 'function' && reportFd !== undefined && !process.channel) {
  try {
    if (fs.fstatSync(reportFd).isSocket()) {
      process.send = (message, ...rest) => {
        report(message);
        const callback = rest.find((a) => typeof a === 'function');
        if (callback) process.nextTick(callback, null);
        return true;
      };
    }
  } catch {
    // No such fd here.
  }
}

// ---- drain ----------------------------------------------------------------
//
// Nothing here runs per request while the worker serves: listen() registers
// the server and a few server-level listeners, and everything per request
// or per connection happens only once the stop signal has arrived (the
// Connection: close marking subscribes to Node's request diagnostics
// channel then). Node's own list of a server's HTTP connections
// (`closeIdleConnections` uses it) tells which ones are between requests.

// Servers listening on pminit's sockets, and what was upgraded from them.
const servers = new Set();
const sessions = new Set(); // HTTP/2 sessions
const webSockets = new Set(); // sockets handed over by 'upgrade: websocket'
let draining = false;

// A keep-alive connection is closed once it has read nothing for a whole
// sweep period (so a request on its way is answered, with Connection:
// close, rather than cut off); WebSocket peers get this long to answer a
// close frame before the socket is cut.
const SWEEP_MS = 200;
const CLOSE_GRACE_MS = 2000;
// An unmasked close frame, status 1001 (going away): servers send no mask.
const GOING_AWAY = 1001;
const CLOSE_FRAME = Buffer.from([0x88, 0x02, GOING_AWAY >> 8, GOING_AWAY & 0xff]);

function track(server) {
  servers.add(server);
  // First, so that we see the signal even when the app's handler exits.
  if (servers.size === 1) process.prependListener(stopSignal, onStop);
  // node:http2 servers emit 'session' per connection; others never do.
  server.on('session', onSession);
  // Adding an 'upgrade' listener of our own to a server without one would
  // make Node accept upgrades nobody handles: hook only when the app has
  // one, or adds one later.
  if (server.listenerCount('upgrade') > 0) hookUpgrades(server);
  else server.on('newListener', onNewListener);
}

function onNewListener(event) {
  if (event !== 'upgrade') return;
  this.removeListener('newListener', onNewListener);
  hookUpgrades(this);
}

function hookUpgrades(server) {
  server.prependListener('upgrade', onUpgrade);
}

function onUpgrade(req, socket) {
  if (String(req.headers.upgrade).toLowerCase() !== 'websocket') return;
  webSockets.add(socket);
  socket.on('close', forgetWebSocket);
  // While draining, the sweep closes it once the app has taken it over.
}

function forgetWebSocket() {
  webSockets.delete(this);
}

function onSession(session) {
  // While draining, the sweep sends it GOAWAY (after its first requests).
  sessions.add(session);
  session.on('close', forgetSession);
}

function forgetSession() {
  sessions.delete(this);
}

// Node's ConnectionsList of an HTTP server (all, or only those between
// requests); undefined when this Node has none.
function httpConnections(server, which) {
  const key = Object.getOwnPropertySymbols(server)
    .find((s) => s.description === 'http.server.connections');
  const list = key === undefined ? undefined : server[key];
  if (!list || typeof list[which] !== 'function') return undefined;
  try {
    return list[which]();
  } catch {
    return undefined;
  }
}

// Every response started while draining closes its connection.
function onRequestWhileDraining({ response, server }) {
  if (response && servers.has(server)) response.shouldKeepAlive = false;
}

// bytesRead of each idle socket when a sweep first saw it at that count.
const lastRead = new WeakMap();

// Closes the keep-alive connections of `server` that are between requests
// and have read nothing for a whole sweep period. Runs after the poll
// phase (setImmediate), so bytes already received have been parsed: a
// request that has arrived makes its connection busy, and it is answered.
function sweepServer(server) {
  const now = performance.now();
  const idle = httpConnections(server, 'idle');
  if (idle === undefined) {
    // No list on this Node: Node's own (which does not wait for quiet).
    const own = Object.getPrototypeOf(server).closeIdleConnections;
    if (typeof own === 'function') own.call(server);
    return;
  }
  for (const connection of idle) {
    const socket = connection.socket;
    if (!socket || socket.destroyed) continue;
    const res = socket._httpMessage;
    if (res && !res.finished) continue;
    const read = socket.bytesRead;
    const seen = lastRead.get(socket);
    if (seen === undefined || seen.read !== read) lastRead.set(socket, { read, at: now });
    else if (now - seen.at >= SWEEP_MS) socket.destroy();
  }
}

function webSocketOf(socket) {
  // The `ws` library (also under socket.io) keeps its WebSocket on the
  // socket under Symbol('websocket'); its close() runs the closing
  // handshake properly.
  for (const key of Object.getOwnPropertySymbols(socket)) {
    if (key.description !== 'websocket') continue;
    const ws = socket[key];
    if (ws && typeof ws.close === 'function') return ws;
  }
  return undefined;
}

const closing = new WeakSet();

function closeWebSocket(socket) {
  if (closing.has(socket) || socket.destroyed) return;
  closing.add(socket);
  const ws = webSocketOf(socket);
  try {
    if (ws) ws.close(GOING_AWAY, 'server going away');
    else if (socket.writable) socket.end(CLOSE_FRAME);
  } catch {
    socket.destroy();
  }
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}

function sweep() {
  for (const server of servers) {
    if (typeof Object.getPrototypeOf(server).closeIdleConnections === 'function') {
      sweepServer(server);
    }
  }
  for (const socket of webSockets) closeWebSocket(socket);
  // GOAWAY: the streams under way finish, then the session closes.
  for (const session of sessions) {
    if (!session.closed && !session.destroyed) session.close();
  }
}

// The app's own server.close() calls closeIdleConnections() first, which
// in Node closes idle connections at once, under a request that may be on
// its way; while draining it sweeps instead.
function closeIdlePolitely() {
  sweepServer(this);
}

function startDrain() {
  draining = true;
  diagnostics.subscribe('http.server.request.start', onRequestWhileDraining);
  for (const server of servers) {
    if (typeof server.closeIdleConnections !== 'function') continue;
    server.closeIdleConnections = closeIdlePolitely;
    // Responses under way whose headers are not out yet close too.
    for (const connection of httpConnections(server, 'all') ?? []) {
      const res = connection.socket && connection.socket._httpMessage;
      if (res && !res.headersSent) res.shouldKeepAlive = false;
    }
  }
  setImmediate(sweep);
  setInterval(() => setImmediate(sweep), SWEEP_MS).unref();
}

// End as the signal would have: without our listener, raise it again.
function endBySignal() {
  process.removeListener(stopSignal, onStop);
  process.kill(process.pid, stopSignal);
}

// Stop accepting; once the last connection of every server has ended, end.
function closeServers() {
  let open = servers.size;
  const done = () => {
    open -= 1;
    if (open === 0) endBySignal();
  };
  for (const server of servers) {
    // net.Server's close: stop accepting and wait for the connections (the
    // sweep and Connection: close end the HTTP ones).
    net.Server.prototype.close.call(server, done);
  }
}

function onStop() {
  const appHandles = process.listeners(stopSignal).some((l) => l !== onStop);
  if (!draining) {
    startDrain();
    // The app's own handler, if any, closes its servers and ends the
    // process; we stand in for none.
    if (!appHandles) closeServers();
    return;
  }
  // The signal again, and nobody else listens: the app re-raised it after
  // its own shutdown (NestJS does), or someone insists. End now.
  if (!appHandles) endBySignal();
}

// A worker pminit started itself has pminit at the other end of its IPC
// channel (PMINIT_IPC, removed here so the app's own children, whose
// channel, if any, leads to the app, never ask pminit for sockets).
const askable = env.PMINIT_IPC === '1';
delete env.PMINIT_IPC;
const canAsk = () => askable && process.connected && typeof process.send === 'function';

// ---- liveness and memory --------------------------------------------------
//
// Nothing here runs per request: the ping listener runs once per ping (every
// few seconds), the memory check once per garbage collection, and only
// when pminit set a mark.
const PING = 'NODE_PMINIT_PING';

function onPing(message) {
  if (message === null || typeof message !== 'object' || message.cmd !== PING) return;
  let heap;
  try {
    heap = v8.getHeapStatistics();
  } catch {
    heap = undefined;
  }
  report({ pminit: 'alive', heap_used: heap?.used_heap_size, heap_limit: heap?.heap_size_limit });
}

const memoryMark = /^[0-9]+$/.test(env.PMINIT_MEMORY_REPORT || '') ? Number(env.PMINIT_MEMORY_REPORT) : 0;
delete env.PMINIT_MEMORY_REPORT;
// At most one report per this many ms, however many collections run.
const MEMORY_REPORT_MS = 100;
let memoryReported = -Infinity;

// V8 stops a worker whose heap reaches its limit; pminit replaces it
// gently past this part of the limit, if it hears in time.
const HEAP_MARK = 0.85;

function afterGc() {
  const now = performance.now();
  if (now - memoryReported < MEMORY_REPORT_MS) return;
  const heap = v8.getHeapStatistics();
  if (process.memoryUsage.rss() > memoryMark || heap.used_heap_size > heap.heap_size_limit * HEAP_MARK) {
    memoryReported = now;
    report({ pminit: 'memory' });
  }
}

if (askable && process.channel) {
  // An 'internalMessage' listener does not keep the channel referenced.
  process.on('internalMessage', onPing);
  report({ pminit: 'alive' });
  if (memoryMark > 0) {
    try {
      new PerformanceObserver(afterGc).observe({ entryTypes: ['gc'] });
    } catch {
      // No GC observation on this runtime: pminit's own rounds remain.
    }
  }
}

// Asking pminit for a socket on a TCP port the app listens on: one
// request at a time, {pminit: 'listen', id, port, host}, answered with
// Node's own handle-passing message (NODE_HANDLE, the fd in SCM_RIGHTS)
// whose inner message is {cmd: 'NODE_PMINIT_LISTEN', id, ...}, or with
// that message alone and an `error`. A cmd starting with NODE_ makes Node
// deliver it as 'internalMessage', never to the app's 'message' listeners;
// an 'internalMessage' listener does not keep the channel referenced.
const ANSWER = 'NODE_PMINIT_LISTEN';
const ANSWER_TIMEOUT = 30000;
const asks = [];
let asking = null;
let nextId = 1;
let answering = false;

function ask(port, host, done) {
  asks.push({ port, host, done });
  if (!answering) process.on('internalMessage', onAnswer);
  answering = true;
  pump();
}

function settle(error, handle, answer) {
  const a = asking;
  asking = null;
  clearTimeout(a.timer);
  a.done(error, handle, answer);
  pump();
}

function pump() {
  if (asking !== null || asks.length === 0) return;
  asking = asks.shift();
  asking.id = nextId;
  nextId += 1;
  // Also keeps the process alive while it waits, as a real listen would.
  asking.timer = setTimeout(() => {
    settle(listenError('ETIMEDOUT', 'pminit did not answer', asking.host, asking.port));
  }, ANSWER_TIMEOUT);
  const { id, port, host } = asking;
  try {
    process.send({ pminit: 'listen', id, port, host: host ?? null }, (err) => {
      if (err && asking && asking.id === id) settle(err);
    });
  } catch (err) {
    settle(err);
  }
}

function onAnswer(message, handle) {
  if (message === null || typeof message !== 'object' || message.cmd !== ANSWER) return;
  if (asking === null || message.id !== asking.id) {
    if (handle && typeof handle.close === 'function') handle.close();
    return;
  }
  if (message.error) {
    const e = message.error;
    if (handle && typeof handle.close === 'function') handle.close();
    settle(listenError(String(e.code || 'EINVAL'), String(e.message || ''), asking.host, asking.port));
  } else if (!handle) {
    settle(listenError('EINVAL', 'pminit sent no socket', asking.host, asking.port));
  } else {
    settle(null, handle, message);
  }
}

// An error shaped like the one Node's own listen emits.
function listenError(code, message, host, port) {
  const where = `${host ?? '::'}:${port}`;
  const e = new Error(`listen ${code}: ${message} (pminit) ${where}`);
  e.code = code;
  const n = os.constants.errno[code];
  if (n !== undefined) e.errno = -n;
  e.syscall = 'listen';
  e.address = host ?? '::';
  e.port = port;
  return e;
}

if (sockets.length > 0 || askable) {
  const listen = net.Server.prototype.listen;

  // A declared socket (--listen, $PORT) for this listen, if any. On
  // --listen's port the operator's address wins, whatever host the app
  // names; $PORT's wildcard ("any") serves an app that names no host (or
  // the wildcard itself); for any other host pminit moves it (ask).
  const find = (port, host, path) => {
    if (path !== undefined) return sockets.find((s) => s.path === path);
    const same = sockets.filter((s) => s.port === port);
    const fixed = same.filter((s) => !s.any);
    if (fixed.length > 0) return fixed.find((s) => s.host === host) ?? fixed[0];
    const any = same.find((s) => s.any);
    if (any && (host === undefined || host === any.host)) return any;
    if (any && !canAsk()) return any;
    return undefined;
  };

  // Marks `server` as on a pminit socket: the drain covers it, and once it
  // listens on a declared one pminit hears that the worker is ready.
  const adopt = (server, declared, port) => {
    delete env.PMINIT_NODE_LISTEN;
    delete env.PMINIT_REPORT_FD;
    track(server);
    if (declared) server.once('listening', () => report({ pminit: 'listening', port: port ?? null }));
  };

  net.Server.prototype.listen = function pminitListen(...args) {
    const last = args[args.length - 1];
    const callback = typeof last === 'function' ? last : undefined;
    const first = args[0];
    let port;
    let host;
    let path;
    let options = {};
    if (typeof first === 'number' || (typeof first === 'string' && /^[0-9]+$/.test(first))) {
      port = first;
      host = typeof args[1] === 'string' ? args[1] : undefined;
    } else if (typeof first === 'string') {
      path = first;
    } else if (first !== null && typeof first === 'object' &&
               first.fd === undefined && first.handle === undefined && first._handle === undefined) {
      options = first;
      if (first.path !== undefined) path = first.path;
      else {
        port = first.port;
        host = first.host;
      }
    }
    if (host === '' || host === null) host = undefined;
    const p = Number(port);
    // Ephemeral (0), absent or invalid ports: Node's own listen, which
    // also throws Node's own errors for bad arguments.
    const tcp = path === undefined && port !== undefined && port !== null && port !== '' &&
      Number.isInteger(p) && p > 0 && p < 65536 && typeof host !== 'object';
    const socket = path !== undefined ? find(undefined, undefined, path) : tcp ? find(p, host) : undefined;
    if (socket) {
      adopt(this, true, socket.port);
      const fd = { fd: socket.fd };
      return callback ? listen.call(this, fd, callback) : listen.call(this, fd);
    }
    if (!tcp || options.ipv6Only === true || !canAsk()) return listen.apply(this, args);
    // Listen asynchronously, as Node does for a host name: the server is
    // returned now and listens (or emits 'error') when pminit answers.
    const server = this;
    const fail = (err) => process.nextTick(() => server.emit('error', err));
    const request = (address) => ask(p, address, (err, handle, answer) => {
      if (err) return fail(err);
      adopt(server, answer.declared === true, answer.port);
      try {
        if (callback) listen.call(server, handle, callback);
        else listen.call(server, handle);
      } catch (e) {
        fail(e);
      }
    });
    if (host === undefined || net.isIP(host) !== 0) request(host);
    else {
      // A name: the first address Node's dns.lookup gives, as Node's own
      // listen does (so `localhost` is 127.0.0.1 or ::1 as the system says).
      dns.lookup(host, (err, address) => (err ? fail(err) : request(address)));
    }
    return this;
  };
}

// Pass-through for processes that spawn the app (npm, yarn): children spawned
// while the socket map is still in the environment (nobody listened on the
// sockets yet) get the sockets and the report channel at the same numbers.
// A child whose stdio already uses those positions is left alone.
const passed = sockets.map((s) => s.fd);
if (reportFd !== undefined) passed.push(reportFd);
if (sockets.length > 0 && passed.every((fd) => fd >= 3)) {
  const spawn = childProcess.ChildProcess.prototype.spawn;
  const top = Math.max(...passed);
  childProcess.ChildProcess.prototype.spawn = function pminitSpawn(options) {
    const pairs = options && Array.isArray(options.envPairs) ? options.envPairs : [];
    const forApp = pairs.some((kv) => kv.startsWith('PMINIT_NODE_LISTEN='));
    if (forApp) {
      let stdio = options.stdio;
      if (stdio === undefined || stdio === null) stdio = 'pipe';
      if (typeof stdio === 'string') stdio = [stdio, stdio, stdio];
      if (Array.isArray(stdio) && stdio.length <= 3) {
        const extended = stdio.slice();
        while (extended.length < 3) extended.push('pipe');
        for (let i = 3; i <= top; i += 1) extended.push(passed.includes(i) ? i : 'ignore');
        options = { ...options, stdio: extended };
      }
    }
    return spawn.call(this, options);
  };
}
