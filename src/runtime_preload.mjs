// pminit's preload for Bun and Deno workers. pminit loads it as a data:
// URL, `BUN_OPTIONS=--preload=data:...` for Bun and `deno run
// --preload=data:...` for Deno, and writes its settings into the first
// line: `const PMINIT = {port, stopSignal}` (so Deno needs no
// --allow-env for it). It may import only node: builtins.
//
// Neither runtime's own server takes a listening fd (Bun.serve and
// Deno.serve bind their own socket; Bun's node:http is Bun.serve), and Bun
// cannot receive a handle over IPC, so pminit does not bind $PORT for them.
// Instead every worker binds $PORT itself with SO_REUSEPORT and the kernel
// spreads the connections over the workers' sockets. What this file does:
//
// 1. reusePort: Bun.serve, Deno.serve and net.Server#listen on $PORT get
//    `reusePort: true` (Deno also needs --unstable-net, which pminit adds).
// 2. ready: once a server listens on $PORT, pminit hears it on the Node
//    IPC channel both runtimes open from NODE_CHANNEL_FD.
// 3. drain: on the stop signal, every such server stops accepting and
//    finishes its requests (Bun: server.stop(), Deno: server.shutdown(),
//    node:net: close()), WebSockets get a close frame (1001, going away),
//    and the process exits 0 once they are done, unless the app handles
//    the signal itself.
//
// Runtime facts it depends on (checked on Bun 1.4.5, Deno 2.9.6): Bun's
// node:http calls the global Bun.serve with `reusePort: false`; Bun.serve
// defaults its port to $PORT, then 3000; Deno.serve defaults to 8000.
import net from 'node:net';
import process from 'node:process';

const isBun = typeof globalThis.Bun !== 'undefined';
const isDeno = !isBun && typeof globalThis.Deno !== 'undefined';
const config = typeof PMINIT === 'object' && PMINIT !== null ? PMINIT : {};
const ourPort = Number(config.port);
const stopSignal = config.stopSignal || 'SIGINT';
const GOING_AWAY = 1001;

// Bun reads the preload from BUN_OPTIONS, which the app's own children
// inherit: take ours out so they run without it.
if (isBun && typeof process.env.BUN_OPTIONS === 'string') {
  const rest = process.env.BUN_OPTIONS.split(' ')
    .filter((w) => !w.startsWith('--preload=data:text/javascript;base64,'))
    .join(' ').trim();
  if (rest) process.env.BUN_OPTIONS = rest;
  else delete process.env.BUN_OPTIONS;
}

// The IPC channel keeps neither runtime alive on our account.
try {
  if (process.channel && typeof process.channel.unref === 'function') process.channel.unref();
} catch {
  // No channel: nothing to report to.
}

function report(message) {
  try {
    if (typeof process.send === 'function' && process.connected !== false) process.send(message);
  } catch {
    // pminit is gone: nothing to tell.
  }
}

const onPort = (port) => Number.isInteger(ourPort) && ourPort > 0 && Number(port) === ourPort;

// What the drain stops: {stop(): Promise} per server, and open WebSockets.
const servers = new Set();
const webSockets = new Set();
let draining = false;
let appHandlers = 0;

function adopt(stop) {
  servers.add(stop);
  if (servers.size === 1) listenForStop();
  report({ pminit: 'listening', port: ourPort });
}

// ---- Bun ------------------------------------------------------------------

function trackBunWebSockets(options) {
  const ws = options.websocket;
  if (!ws || typeof ws !== 'object') return options;
  const open = ws.open;
  const close = ws.close;
  return {
    ...options,
    websocket: {
      ...ws,
      open(socket, ...rest) {
        webSockets.add(socket);
        if (draining) socket.close(GOING_AWAY, 'server going away');
        return open ? open.call(this, socket, ...rest) : undefined;
      },
      close(socket, ...rest) {
        webSockets.delete(socket);
        return close ? close.call(this, socket, ...rest) : undefined;
      },
    },
  };
}

if (isBun && typeof Bun.serve === 'function') {
  const serve = Bun.serve;
  Bun.serve = function pminitServe(options, ...rest) {
    if (options === null || typeof options !== 'object' || options.unix !== undefined) {
      return serve.call(this, options, ...rest);
    }
    const port = options.port ?? process.env.PORT ?? 3000;
    if (!onPort(port)) return serve.call(this, options, ...rest);
    const server = serve.call(this, trackBunWebSockets({ ...options, reusePort: true }), ...rest);
    adopt(() => server.stop(false));
    return server;
  };
}

// ---- Deno -----------------------------------------------------------------

if (isDeno && typeof Deno.serve === 'function') {
  const serve = Deno.serve;
  Deno.serve = function pminitServe(arg1, arg2) {
    const options = typeof arg1 === 'object' && arg1 !== null ? arg1 : undefined;
    const handler = typeof arg1 === 'function' ? arg1 : arg2;
    if (options && (options.path !== undefined || options.cid !== undefined)) {
      return serve.call(this, arg1, arg2);
    }
    if (!onPort(options?.port ?? 8000)) return serve.call(this, arg1, arg2);
    const server = handler === undefined
      ? serve.call(this, { ...options, reusePort: true })
      : serve.call(this, { ...options, reusePort: true }, handler);
    adopt(() => server.shutdown());
    return server;
  };
  const upgrade = Deno.upgradeWebSocket;
  if (typeof upgrade === 'function') {
    Deno.upgradeWebSocket = function pminitUpgrade(...args) {
      const result = upgrade.apply(this, args);
      const socket = result && result.socket;
      if (socket) {
        webSockets.add(socket);
        socket.addEventListener('close', () => webSockets.delete(socket));
        if (draining) socket.addEventListener('open', () => socket.close(GOING_AWAY, 'server going away'));
      }
      return result;
    };
  }
  // The app's own handlers for the stop signal: then the app decides when
  // to exit.
  const add = Deno.addSignalListener;
  const remove = Deno.removeSignalListener;
  Deno.addSignalListener = function (signal, fn) {
    if (signal === stopSignal) appHandlers += 1;
    return add.call(this, signal, fn);
  };
  Deno.removeSignalListener = function (signal, fn) {
    if (signal === stopSignal && appHandlers > 0) appHandlers -= 1;
    return remove.call(this, signal, fn);
  };
}

// ---- node:net (node:http on Deno; plain TCP servers on both) --------------

{
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function pminitListen(...args) {
    const first = args[0];
    const last = args[args.length - 1];
    const callback = typeof last === 'function' ? last : undefined;
    let options;
    if (typeof first === 'number' || (typeof first === 'string' && /^[0-9]+$/.test(first))) {
      options = { port: Number(first) };
      if (typeof args[1] === 'string') options.host = args[1];
    } else if (first !== null && typeof first === 'object' && first.fd === undefined &&
               first.handle === undefined && first.path === undefined) {
      options = { ...first };
    }
    if (!options || !onPort(options.port)) return listen.apply(this, args);
    options.reusePort = true;
    const server = this;
    server.once('listening', () => adopt(() => new Promise((resolve) => {
      net.Server.prototype.close.call(server, () => resolve());
      if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
    })));
    return callback ? listen.call(this, options, callback) : listen.call(this, options);
  };
}

// ---- the stop signal -------------------------------------------------------

function listenForStop() {
  if (isDeno) Deno.addSignalListener.call(Deno, stopSignal, onStop);
  else process.prependListener(stopSignal, onStop);
  // Ours is not the app's.
  if (isDeno) appHandlers -= 1;
}

function ownHandlers() {
  if (isDeno) return appHandlers > 0;
  return process.listeners(stopSignal).some((l) => l !== onStop);
}

function onStop() {
  if (draining) {
    if (!ownHandlers()) process.exit(0);
    return;
  }
  draining = true;
  for (const socket of webSockets) {
    try {
      socket.close(GOING_AWAY, 'server going away');
    } catch {
      // Already closing.
    }
  }
  const stops = [...servers].map((stop) => {
    try {
      return Promise.resolve(stop()).catch(() => {});
    } catch {
      return Promise.resolve();
    }
  });
  Promise.all(stops).then(() => {
    if (!ownHandlers()) process.exit(0);
  });
}
