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
// 4. drain: when the stop signal (PMINIT_STOP_SIGNAL, SIGINT by default)
//    arrives and the app has no handler of its own, the servers stop
//    accepting, requests in flight finish and are answered with
//    `Connection: close`, idle keep-alive connections are closed by their
//    keep-alive timeout rather than under a request that may be on its way,
//    and the process ends as the signal would have ended it.
import childProcess from 'node:child_process';
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';

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

const servers = new Set();
let draining = false;

function drain() {
  draining = true;
  let open = servers.size;
  const done = () => {
    open -= 1;
    if (open > 0) return;
    // End as the signal would have: remove our handler and raise it again.
    process.removeListener(stopSignal, onStop);
    process.kill(process.pid, stopSignal);
  };
  for (const server of servers) {
    if (typeof server.keepAliveTimeout === 'number') {
      server.keepAliveTimeout = Math.min(server.keepAliveTimeout || 1000, 1000);
    }
    for (const res of server.pminitActive || []) {
      if (!res.headersSent) res.shouldKeepAlive = false;
    }
    // net.Server's close: stop accepting, keep the open connections (http's
    // close would also close idle ones, racing a request on its way). Its
    // callback runs once the last connection has ended.
    net.Server.prototype.close.call(server, done);
  }
}

function onStop() {
  // The app's own handler, if any, decides; we only stand in for none.
  if (process.listeners(stopSignal).some((l) => l !== onStop)) return;
  if (!draining) drain();
}

// A worker pminit started itself has pminit at the other end of its IPC
// channel (PMINIT_IPC, removed here so the app's own children, whose
// channel, if any, leads to the app, never ask pminit for sockets).
const askable = env.PMINIT_IPC === '1';
delete env.PMINIT_IPC;
const canAsk = () => askable && process.connected && typeof process.send === 'function';

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
    servers.add(server);
    if (servers.size === 1) process.on(stopSignal, onStop);
    // HTTP servers: answer with Connection: close once draining.
    if (typeof server.closeIdleConnections === 'function') {
      const active = new Set();
      server.pminitActive = active;
      // Before the app's own handler, which may answer at once.
      server.prependListener('request', (req, res) => {
        if (draining) res.shouldKeepAlive = false;
        active.add(res);
        res.on('finish', () => active.delete(res));
        res.on('close', () => active.delete(res));
      });
    }
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
