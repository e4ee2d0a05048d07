// pminit's preload for Node workers, loaded through
// NODE_OPTIONS=--import=data:text/javascript;base64,... (so it may import
// only node: builtins). It does four things, none of which the app has to
// know about:
//
// 1. listen: an unmodified `server.listen(PORT)` (or `listen({port})`,
//    `listen(path)`) on a port or path pminit holds becomes
//    `listen({fd})`, so N workers share pminit's socket. The map travels in
//    PMINIT_NODE_LISTEN as JSON, [{fd, port, host} | {fd, path}], and is
//    removed from the environment at the first listen it serves, so the
//    app's own children do not take the same sockets.
// 2. report: once such a server listens, pminit is told (readiness).
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
import fs from 'node:fs';
import net from 'node:net';

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

if (sockets.length > 0) {
  const listen = net.Server.prototype.listen;

  const find = (port, host, path) => {
    if (path !== undefined) return sockets.find((s) => s.path === path);
    const p = Number(port);
    if (!Number.isInteger(p) || p <= 0) return undefined;
    const same = sockets.filter((s) => s.port === p);
    return same.find((s) => s.host === host) ?? same[0];
  };

  net.Server.prototype.listen = function pminitListen(...args) {
    const last = args[args.length - 1];
    const callback = typeof last === 'function' ? last : undefined;
    const first = args[0];
    let port;
    let host;
    let path;
    if (typeof first === 'number' || (typeof first === 'string' && /^[0-9]+$/.test(first))) {
      port = first;
      host = typeof args[1] === 'string' ? args[1] : undefined;
    } else if (typeof first === 'string') {
      path = first;
    } else if (first !== null && typeof first === 'object' &&
               first.fd === undefined && first.handle === undefined && first._handle === undefined) {
      if (first.path !== undefined) path = first.path;
      else {
        port = first.port;
        host = first.host;
      }
    }
    const socket = find(port, host, path);
    if (!socket) return listen.apply(this, args);
    delete env.PMINIT_NODE_LISTEN;
    delete env.PMINIT_REPORT_FD;
    servers.add(this);
    if (servers.size === 1) process.on(stopSignal, onStop);
    // HTTP servers: answer with Connection: close once draining.
    if (typeof this.closeIdleConnections === 'function') {
      const active = new Set();
      this.pminitActive = active;
      // Before the app's own handler, which may answer at once.
      this.prependListener('request', (req, res) => {
        if (draining) res.shouldKeepAlive = false;
        active.add(res);
        res.on('finish', () => active.delete(res));
        res.on('close', () => active.delete(res));
      });
    }
    this.once('listening', () => report({ pminit: 'listening', port: socket.port ?? null }));
    const options = { fd: socket.fd };
    return callback ? listen.call(this, options, callback) : listen.call(this, options);
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
