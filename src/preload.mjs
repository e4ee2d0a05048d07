// pminit's preload for Node workers, loaded through
// NODE_OPTIONS=--import=data:text/javascript;base64,... (src/node.rs), so it
// may import only node: builtins. None of it is for the app to know about:
//
// 1. listen: an unmodified `server.listen(PORT)` (or `listen({port})`,
//    `listen(path)`) on a port or path pminit holds becomes `listen({fd})`,
//    so N workers share pminit's socket. Any other TCP port (an admin or
//    metrics port), and $PORT at a host the app names, is asked of pminit
//    over the IPC channel; pminit binds it, keeps it for its whole life and
//    hands the same socket to every worker that asks. listen(0) stays the
//    worker's own.
// 2. report: once a server listens on a declared socket (--listen, $PORT),
//    pminit is told (readiness).
// 3. pass-through: a process that never listens (npm, yarn) passes the
//    sockets and the report channel on to the processes it spawns, at the
//    same fd numbers: Node's spawn hands a child only the stdio it is told
//    to, so without this `npm start` would start the app without them.
// 4. drain: once the stop signal arrives, whoever handles it: every
//    response written from then on carries `Connection: close`, keep-alive
//    connections that stay quiet are closed, WebSocket connections get a
//    close frame (1001, going away) and HTTP/2 sessions a GOAWAY. When the
//    app has no handler of its own the servers also stop accepting and the
//    process ends as the signal would have ended it, once the last
//    connection is gone; when it has one, the app's shutdown runs as
//    written (its server.close() callback fires once the connections are
//    drained).
// 5. liveness: pminit's pings are answered from this event loop with the V8
//    heap's use and limit, so a loop stuck in a computation cannot answer.
//    After a garbage collection that leaves the process past its mark,
//    pminit is asked to look at it now.
//
// Nothing here runs per HTTP request while the worker serves (measured:
// bench/PRELOAD_COST.md): listen() registers a server and a few
// server-level listeners; per-request work starts only with the drain.
//
// The wire (one JSON line each way; src/ipc.rs decodes what we send,
// src/event_loop answers):
//   to pminit    {pminit: 'alive'}                        hello at start
//                {pminit: 'alive', heap_used, heap_limit} answer to a ping
//                {pminit: 'memory'}                       past a memory mark
//                {pminit: 'listening', port}              a declared socket listens
//                {pminit: 'listen', id, port, host}       a socket for this port?
//   from pminit  {cmd: 'NODE_PMINIT_PING'}
//                {cmd: 'NODE_HANDLE', type: 'net.Native', msg: {cmd:
//                 'NODE_PMINIT_LISTEN', id, address, port, declared}} + the fd
//                {cmd: 'NODE_PMINIT_LISTEN', id, error: {code, message}}
// The environment (each variable is removed once used, so the app's own
// children never take pminit's sockets or speak to pminit):
//   PMINIT_NODE_LISTEN   [{fd, port, host, any?} | {fd, path}]; `any`: the
//                        wildcard pminit bound for $PORT   (removed at listen)
//   PMINIT_REPORT_FD     the channel's fd, for a process without a channel
//                        of its own (the app under npm)    (removed at listen)
//   PMINIT_STOP_SIGNAL   the stop signal, SIGINT if unset  (removed at listen)
//   PMINIT_IPC           '1': the channel leads to pminit  (removed at start)
//   PMINIT_MEMORY_REPORT bytes of RSS past which a GC reports (removed at start)
//
// Node internals this depends on. Checked on Node 20.20.2, 22.23.3 and
// 24.21.0 by tests/preload/ (scripts/test.sh runs it on 22 and 24); a Node
// release that changes one of them shows up there first.
// - `process.on('internalMessage', (message, handle))`: Node hands the IPC
//   messages whose `cmd` starts with `NODE_` to this event and never to
//   'message'; a listener of it does not keep the channel referenced
//   (lib/internal/child_process.js).
// - NODE_HANDLE of type 'net.Native': the inner `msg` is emitted with the
//   fd that came with the line as a raw TCP handle, and Node answers
//   NODE_HANDLE_ACK by itself; `server.listen(handle)` takes that handle.
// - `ChildProcess.prototype.spawn(options)`: spawn, fork and exec call it
//   with `options.envPairs` ('NAME=value' strings) and `options.stdio`.
// - `server[Symbol('http.server.connections')]`: an HTTP server's
//   ConnectionsList, `idle()` and `all()` giving parsers with `.socket`.
// - `socket._httpMessage`: the response on that connection;
//   `response.shouldKeepAlive = false` before its headers go out makes
//   Node write `Connection: close` and end the connection after it.
// - `http.Server.prototype.close()` calls `this.closeIdleConnections()`
//   (so an own property replaces it) before net.Server's close.
// - The ws package (8.x, also under socket.io) keeps an upgraded socket's
//   WebSocket at `socket[Symbol('websocket')]` (ws/lib/constants.js).
// Public API used in ways worth knowing: `net.Server.prototype.listen` is
// the one method every net/http/https/http2 server listens through (we
// replace it); the 'json' IPC serialization is one `JSON.stringify` line
// per message (written by hand on PMINIT_REPORT_FD); the diagnostics
// channel 'http.server.request.start' ({request, response, socket,
// server}); `server.closeIdleConnections()`; http2's 'session' event and
// `session.close()` (GOAWAY); a signal listener on `process` replaces the
// signal's default action; a server with an 'upgrade' listener hands
// upgrade requests over to it (without one they are ordinary requests).
import childProcess from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';

const env = process.env;
const config = readConfig(env);
// For this process only: the app's own children, whose channel (if any)
// leads to the app, never ask pminit for sockets or answer its pings.
delete env.PMINIT_IPC;
delete env.PMINIT_MEMORY_REPORT;

// The state that changes while the worker runs: what the drain covers,
// and the listen requests waiting for pminit's answer.
const drain = {
  on: false, // the stop signal has arrived
  servers: new Set(), // servers on pminit's sockets
  sessions: new Set(), // their HTTP/2 sessions
  webSockets: new Set(), // their sockets handed over by 'upgrade: websocket'
  lastRead: new WeakMap(), // socket -> {read, at}: when a sweep saw its bytesRead
  closing: new WeakSet(), // WebSocket sockets sent a close frame
};
const asks = {
  queue: [], // {port, host, done}
  current: null, // the one sent: {port, host, done, id, timer}
  nextId: 1,
  listening: false, // our 'internalMessage' listener for answers is on
};

/** What the environment tells the preload, read once at start. */
function readConfig(vars) {
  return Object.freeze({
    sockets: socketMap(vars.PMINIT_NODE_LISTEN),
    reportFd: count(vars.PMINIT_REPORT_FD),
    stopSignal: vars.PMINIT_STOP_SIGNAL || 'SIGINT',
    askable: vars.PMINIT_IPC === '1',
    memoryMark: count(vars.PMINIT_MEMORY_REPORT) ?? 0,
  });
}

function socketMap(json) {
  try {
    const map = json ? JSON.parse(json) : [];
    return Array.isArray(map) ? map : [];
  } catch {
    return [];
  }
}

function count(text) {
  return /^[0-9]+$/.test(text || '') ? Number(text) : undefined;
}

// ---- report ------------------------------------------------------------

// One JSON line to pminit: through Node's own IPC channel when this process
// has it, else straight onto the inherited channel fd (the app under npm).
function report(message) {
  try {
    if (process.channel && typeof process.send === 'function') {
      process.send(message);
    } else if (config.reportFd !== undefined) {
      fs.writeSync(config.reportFd, `${JSON.stringify(message)}\n`);
    }
  } catch {
    // pminit is gone or the fd is not ours: nothing to tell.
  }
}

// Apps written for pm2 call process.send('ready'); under npm the app has no
// channel of its own, so give it one that reaches pminit.
function sendThroughReportFd() {
  if (typeof process.send === 'function' || config.reportFd === undefined || process.channel) return;
  try {
    if (!fs.fstatSync(config.reportFd).isSocket()) return;
  } catch {
    return; // No such fd here.
  }
  process.send = (message, ...rest) => {
    report(message);
    const callback = rest.find((a) => typeof a === 'function');
    if (callback) process.nextTick(callback, null);
    return true;
  };
}

// A worker pminit started itself has pminit at the other end of its channel.
function canAsk() {
  return config.askable && process.connected && typeof process.send === 'function';
}

// ---- listen: which socket --------------------------------------------------

/**
 * What a listen() call asks for, from Node's argument forms: `(port[,
 * host][, backlog][, cb])`, `(path[, cb])`, `(options[, cb])`. A handle, an
 * fd or anything else is none of ours (no port, no path).
 */
export function listenRequest(args) {
  const last = args[args.length - 1];
  const request = { port: undefined, host: undefined, path: undefined, ipv6Only: false };
  request.callback = typeof last === 'function' ? last : undefined;
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^[0-9]+$/.test(first))) {
    request.port = first;
    request.host = typeof args[1] === 'string' ? args[1] : undefined;
  } else if (typeof first === 'string') {
    request.path = first;
  } else if (first !== null && typeof first === 'object' &&
             first.fd === undefined && first.handle === undefined && first._handle === undefined) {
    if (first.path !== undefined) request.path = first.path;
    else {
      request.port = first.port;
      request.host = first.host;
    }
    request.ipv6Only = first.ipv6Only === true;
  }
  if (request.host === '' || request.host === null) request.host = undefined;
  return request;
}

/**
 * Where a listen goes: `{to: 'fd', socket}` (a declared socket of
 * PMINIT_NODE_LISTEN), `{to: 'pminit', port}` (ask pminit for one) or
 * `{to: 'node'}` (Node's own listen: ephemeral, absent or invalid ports,
 * which also get Node's own errors, undeclared paths, ipv6Only).
 */
export function route(request, sockets, askable) {
  if (request.path !== undefined) {
    const socket = sockets.find((s) => s.path === request.path);
    return socket ? { to: 'fd', socket } : { to: 'node' };
  }
  const port = tcpPort(request);
  if (port === undefined) return { to: 'node' };
  const socket = declaredSocket(sockets, port, request.host, askable);
  if (socket) return { to: 'fd', socket };
  if (request.ipv6Only || !askable) return { to: 'node' };
  return { to: 'pminit', port };
}

// The port 1-65535 of a TCP listen, else undefined.
function tcpPort({ port, host }) {
  if (port === undefined || port === null || port === '' || typeof host === 'object') return undefined;
  const p = Number(port);
  return Number.isInteger(p) && p > 0 && p < 65536 ? p : undefined;
}

// On --listen's port the operator's address wins, whatever host the app
// names; $PORT's wildcard (`any`) serves an app that names no host (or the
// wildcard itself); for any other host pminit moves it (ask), when it can
// be asked.
function declaredSocket(sockets, port, host, askable) {
  const same = sockets.filter((s) => s.port === port);
  const fixed = same.filter((s) => !s.any);
  if (fixed.length > 0) return fixed.find((s) => s.host === host) ?? fixed[0];
  const any = same.find((s) => s.any);
  if (any && (host === undefined || host === any.host || !askable)) return any;
  return undefined;
}

// ---- listen: how -------------------------------------------------------------

const nodeListen = net.Server.prototype.listen;

function pminitListen(...args) {
  const request = listenRequest(args);
  const where = route(request, config.sockets, canAsk());
  if (where.to === 'fd') return listenOnFd(this, where.socket, request.callback);
  if (where.to === 'node') return nodeListen.apply(this, args);
  listenAsked(this, where.port, request.host, request.callback);
  return this;
}

function listenOnFd(server, socket, callback) {
  adopt(server, true, socket.port);
  const fd = { fd: socket.fd };
  return callback ? nodeListen.call(server, fd, callback) : nodeListen.call(server, fd);
}

// Marks `server` as on a pminit socket: the drain covers it, and once it
// listens on a declared one pminit hears that the worker is ready. From
// here on this process is the app: the rest is not for its children.
function adopt(server, declared, port) {
  delete env.PMINIT_NODE_LISTEN;
  delete env.PMINIT_REPORT_FD;
  delete env.PMINIT_STOP_SIGNAL;
  track(server);
  if (declared) server.once('listening', () => report({ pminit: 'listening', port: port ?? null }));
}

// Listens asynchronously, as Node does for a host name: the server is
// returned at once and listens (or emits 'error') when pminit answers.
function listenAsked(server, port, host, callback) {
  const fail = (err) => process.nextTick(() => server.emit('error', err));
  const request = (address) => ask(port, address, (err, handle, answer) => {
    if (err) return fail(err);
    adopt(server, answer.declared === true, answer.port);
    try {
      if (callback) nodeListen.call(server, handle, callback);
      else nodeListen.call(server, handle);
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
}

// ---- listen: asking pminit -----------------------------------------------------
//
// One request at a time, {pminit: 'listen', id, port, host}, answered with
// Node's own handle-passing message (NODE_HANDLE, the fd in SCM_RIGHTS)
// whose inner message is {cmd: 'NODE_PMINIT_LISTEN', id, ...}, or with that
// message alone and an `error`.
const ANSWER = 'NODE_PMINIT_LISTEN';
const ANSWER_TIMEOUT_MS = 30000;

function ask(port, host, done) {
  asks.queue.push({ port, host, done });
  if (!asks.listening) process.on('internalMessage', onAnswer);
  asks.listening = true;
  sendNextAsk();
}

function sendNextAsk() {
  if (asks.current !== null || asks.queue.length === 0) return;
  const a = asks.queue.shift();
  asks.current = a;
  a.id = asks.nextId;
  asks.nextId += 1;
  // Also keeps the process alive while it waits, as a real listen would.
  a.timer = setTimeout(() => {
    settle(listenError('ETIMEDOUT', 'pminit did not answer', a.host, a.port));
  }, ANSWER_TIMEOUT_MS);
  try {
    process.send({ pminit: 'listen', id: a.id, port: a.port, host: a.host ?? null }, (err) => {
      if (err && asks.current === a) settle(err);
    });
  } catch (err) {
    settle(err);
  }
}

function settle(error, handle, answer) {
  const a = asks.current;
  asks.current = null;
  clearTimeout(a.timer);
  a.done(error, handle, answer);
  sendNextAsk();
}

function onAnswer(message, handle) {
  if (message === null || typeof message !== 'object' || message.cmd !== ANSWER) return;
  const a = asks.current;
  if (a === null || message.id !== a.id) {
    closeHandle(handle);
    return;
  }
  if (message.error) {
    const e = message.error;
    closeHandle(handle);
    settle(listenError(String(e.code || 'EINVAL'), String(e.message || ''), a.host, a.port));
  } else if (!handle) {
    settle(listenError('EINVAL', 'pminit sent no socket', a.host, a.port));
  } else {
    settle(null, handle, message);
  }
}

function closeHandle(handle) {
  if (handle && typeof handle.close === 'function') handle.close();
}

// An error shaped like the one Node's own listen emits.
function listenError(code, message, host, port) {
  const e = new Error(`listen ${code}: ${message} (pminit) ${host ?? '::'}:${port}`);
  e.code = code;
  const n = os.constants.errno[code];
  if (n !== undefined) e.errno = -n;
  e.syscall = 'listen';
  e.address = host ?? '::';
  e.port = port;
  return e;
}

// ---- pass-through ----------------------------------------------------------
//
// Children spawned while the socket map is still in the environment (nobody
// here listened on the sockets yet: npm, yarn) get the sockets and the
// report channel at the same numbers. A child whose stdio already uses those
// positions is left alone.
function passThrough() {
  const passed = config.sockets.map((s) => s.fd);
  if (config.reportFd !== undefined) passed.push(config.reportFd);
  if (config.sockets.length === 0 || !passed.every((fd) => fd >= 3)) return;
  const spawn = childProcess.ChildProcess.prototype.spawn;
  const top = Math.max(...passed);
  childProcess.ChildProcess.prototype.spawn = function pminitSpawn(options) {
    const pairs = options && Array.isArray(options.envPairs) ? options.envPairs : [];
    if (pairs.some((kv) => kv.startsWith('PMINIT_NODE_LISTEN='))) {
      const stdio = withPassedFds(options.stdio, passed, top);
      if (stdio !== undefined) options = { ...options, stdio };
    }
    return spawn.call(this, options);
  };
}

// `stdio` (spawn's forms) extended to fd `top`, the passed fds at their
// numbers and the rest ignored; undefined when it already goes past 2.
function withPassedFds(stdio, passed, top) {
  let s = stdio ?? 'pipe';
  if (typeof s === 'string') s = [s, s, s];
  if (!Array.isArray(s) || s.length > 3) return undefined;
  const extended = s.slice();
  while (extended.length < 3) extended.push('pipe');
  for (let i = 3; i <= top; i += 1) extended.push(passed.includes(i) ? i : 'ignore');
  return extended;
}

// ---- drain: what it covers ---------------------------------------------------
//
// Nothing here runs per request while the worker serves: everything per
// request or per connection happens only once the stop signal has arrived
// (the Connection: close marking subscribes to Node's request diagnostics
// channel then). Node's own list of a server's HTTP connections
// (`closeIdleConnections` uses it) tells which ones are between requests.

// A keep-alive connection is closed once it has read nothing for a whole
// sweep period (so a request on its way is answered, with Connection:
// close, rather than cut off); WebSocket peers get this long to answer a
// close frame before the socket is cut.
const SWEEP_MS = 200;
// A connection that has read nothing yet is a client about to send its
// first request (its connect and its write can be far apart on a loaded
// machine): it gets this long before it counts as idle.
const FRESH_MS = 1000;
const CLOSE_GRACE_MS = 2000;
// An unmasked close frame, status 1001 (going away): servers send no mask.
const GOING_AWAY = 1001;
const CLOSE_FRAME = Buffer.from([0x88, 0x02, GOING_AWAY >> 8, GOING_AWAY & 0xff]);

function track(server) {
  if (drain.servers.has(server)) return; // listening again after a close
  drain.servers.add(server);
  // First, so that we see the signal even when the app's handler exits.
  if (drain.servers.size === 1) process.prependListener(config.stopSignal, onStop);
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
  drain.webSockets.add(socket);
  socket.on('close', forgetWebSocket);
}

function forgetWebSocket() {
  drain.webSockets.delete(this);
}

function onSession(session) {
  drain.sessions.add(session);
  session.on('close', forgetSession);
}

function forgetSession() {
  drain.sessions.delete(this);
}

// ---- drain: the stop signal ------------------------------------------------------

function onStop() {
  const appHandles = process.listeners(config.stopSignal).some((l) => l !== onStop);
  if (!drain.on) {
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

function startDrain() {
  drain.on = true;
  diagnostics.subscribe('http.server.request.start', onRequestWhileDraining);
  for (const server of drain.servers) {
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

// Every response started while draining closes its connection.
function onRequestWhileDraining({ response, server }) {
  if (response && drain.servers.has(server)) response.shouldKeepAlive = false;
}

// The app's own server.close() calls closeIdleConnections() first, which
// in Node closes idle connections at once, under a request that may be on
// its way; while draining it sweeps instead.
function closeIdlePolitely() {
  sweepServer(this);
}

// Stop accepting; once the last connection of every server has ended, end.
function closeServers() {
  let open = drain.servers.size;
  const done = () => {
    open -= 1;
    if (open === 0) endBySignal();
  };
  for (const server of drain.servers) {
    // net.Server's close: stop accepting and wait for the connections (the
    // sweep and Connection: close end the HTTP ones).
    net.Server.prototype.close.call(server, done);
  }
}

// End as the signal would have: without our listener, raise it again.
function endBySignal() {
  process.removeListener(config.stopSignal, onStop);
  process.kill(process.pid, config.stopSignal);
}

// ---- drain: the sweep --------------------------------------------------------------
//
// Runs after the poll phase (setImmediate), so bytes already received have
// been parsed: a request that has arrived makes its connection busy, and
// it is answered.

function sweep() {
  for (const server of drain.servers) {
    if (typeof Object.getPrototypeOf(server).closeIdleConnections === 'function') {
      sweepServer(server);
    }
  }
  for (const socket of drain.webSockets) closeWebSocket(socket);
  // GOAWAY: the streams under way finish, then the session closes.
  for (const session of drain.sessions) {
    if (!session.closed && !session.destroyed) session.close();
  }
}

// Closes the keep-alive connections of `server` that are between requests
// and have read nothing for a whole sweep period.
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
    const seen = drain.lastRead.get(socket);
    if (seen === undefined || seen.read !== read) drain.lastRead.set(socket, { read, at: now });
    else if (now - seen.at >= (read === 0 ? FRESH_MS : SWEEP_MS)) socket.destroy();
  }
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

function closeWebSocket(socket) {
  if (drain.closing.has(socket) || socket.destroyed) return;
  drain.closing.add(socket);
  const ws = webSocketOf(socket);
  try {
    if (ws) ws.close(GOING_AWAY, 'server going away');
    else if (socket.writable) socket.end(CLOSE_FRAME);
  } catch {
    socket.destroy();
  }
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}

// The `ws` library's WebSocket on an upgraded socket: its close() runs the
// closing handshake properly.
function webSocketOf(socket) {
  for (const key of Object.getOwnPropertySymbols(socket)) {
    if (key.description !== 'websocket') continue;
    const ws = socket[key];
    if (ws && typeof ws.close === 'function') return ws;
  }
  return undefined;
}

// ---- liveness and memory -----------------------------------------------------
//
// Nothing here runs per request: the ping listener runs once per ping
// (every few seconds), the memory check once per garbage collection, and
// only when pminit set a mark.
const PING = 'NODE_PMINIT_PING';
// At most one memory report per this many ms, however many collections run.
const MEMORY_REPORT_MS = 100;
// V8 stops a worker whose heap reaches its limit; pminit replaces it
// gently past this part of the limit, if it hears in time.
const HEAP_MARK = 0.85;

function startLiveness() {
  if (!config.askable || !process.channel) return;
  // An 'internalMessage' listener does not keep the channel referenced.
  process.on('internalMessage', onPing);
  report({ pminit: 'alive' });
  if (config.memoryMark > 0) watchMemory(config.memoryMark);
}

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

function watchMemory(mark) {
  let reportedAt = -Infinity;
  const afterGc = () => {
    const now = performance.now();
    if (now - reportedAt < MEMORY_REPORT_MS) return;
    const heap = v8.getHeapStatistics();
    if (process.memoryUsage.rss() > mark || heap.used_heap_size > heap.heap_size_limit * HEAP_MARK) {
      reportedAt = now;
      report({ pminit: 'memory' });
    }
  };
  try {
    new PerformanceObserver(afterGc).observe({ entryTypes: ['gc'] });
  } catch {
    // No GC observation on this runtime: pminit's own rounds remain.
  }
}

// ---- start -------------------------------------------------------------------------

sendThroughReportFd();
startLiveness();
if (config.sockets.length > 0 || config.askable) net.Server.prototype.listen = pminitListen;
passThrough();
