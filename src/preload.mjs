// pminit's preload for Node workers, loaded through
// NODE_OPTIONS=--import=data:text/javascript;base64,... (so it may import
// only node: builtins). It makes an unmodified `server.listen(PORT)` (or
// `listen({port})`, `listen(path)`) use the listening socket pminit holds
// for that port or path, passed down as an fd, so N workers share one port
// and nothing has to bind it again.
//
// PMINIT_NODE_LISTEN carries the map as JSON: [{fd, port, host} | {fd, path}].
// It is removed from the environment at the first listen it serves, so the
// app's own child processes do not take the same sockets. A process that
// never listens (npm, yarn) leaves it for the app it starts, and passes the
// sockets on to its children at the same fd numbers: Node's spawn hands a
// child only the stdio it is told to, so without this `npm start` would
// start the app without them.
import childProcess from 'node:child_process';
import net from 'node:net';

const raw = process.env.PMINIT_NODE_LISTEN;
let sockets = [];
try {
  sockets = raw ? JSON.parse(raw) : [];
} catch {
  sockets = [];
}

if (Array.isArray(sockets) && sockets.length > 0) {
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
    delete process.env.PMINIT_NODE_LISTEN;
    const options = { fd: socket.fd };
    return callback ? listen.call(this, options, callback) : listen.call(this, options);
  };

  // Children spawned while the map is still in the environment (that is,
  // before this process listened) inherit the sockets at the same numbers.
  // A child whose stdio already uses those positions is left alone.
  const spawn = childProcess.ChildProcess.prototype.spawn;
  const fds = sockets.map((s) => s.fd);
  const top = Math.max(...fds);
  childProcess.ChildProcess.prototype.spawn = function pminitSpawn(options) {
    const env = options && (options.envPairs || []);
    const passing = Array.isArray(env) && env.some((kv) => kv.startsWith('PMINIT_NODE_LISTEN='));
    if (passing) {
      let stdio = options.stdio;
      if (stdio === undefined || stdio === null) stdio = 'pipe';
      if (typeof stdio === 'string') stdio = [stdio, stdio, stdio];
      if (Array.isArray(stdio) && stdio.length <= 3 && fds.every((fd) => fd >= 3)) {
        const extended = stdio.slice();
        while (extended.length < 3) extended.push('pipe');
        for (let i = 3; i <= top; i += 1) extended.push(fds.includes(i) ? i : 'ignore');
        options = { ...options, stdio: extended };
      }
    }
    return spawn.call(this, options);
  };
}
