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
// 3. drain: on the stop signal, every such server stops accepting, answers
//    with `Connection: close` from then on, ends its keep-alive
//    connections only once they are quiet (so none is cut under a request
//    on its way) and finishes its requests (Bun: then server.stop(),
//    Deno.serve: our own server, below, node:net: close() and a sweep);
//    WebSockets get a close frame (1001, going away), and the process
//    exits 0 once they are done, unless the app handles the signal itself.
//
// Runtime facts it depends on (checked on Bun 1.4.5, Deno 2.9.6): Bun's
// node:http calls the global Bun.serve with `reusePort: false` and an
// `onNodeHTTPRequest` option instead of `fetch`, publishes no request
// diagnostics, and closes a connection after an answer whose headers say
// `Connection: close`, as Bun.serve does; Bun.serve defaults its port to
// $PORT, then 3000; its stop() closes at once the connections between
// requests and those that have sent nothing yet. Deno.serve defaults to
// 8000. Deno's node:http is a port of Node's: a `http.server.connections`
// list whose `_all` holds the sockets, the `http.server.request.start`
// diagnostics channel, `shouldKeepAlive`. Deno internals:
// `Deno[Deno.internal].serveHttpOnConnection(conn, signal, handler,
// onError, onListen)` (ext/http/00_serve.ts) serves one accepted
// connection and returns a Deno.HttpServer whose `finished` rejects when
// the peer resets; its shutdown() ends a connection between requests at
// once and finishes one under way. Without it, Deno.serve as it is.
import diagnostics from 'node:diagnostics_channel';
import net from 'node:net';
import process from 'node:process';

const isBun = typeof globalThis.Bun !== 'undefined';
const isDeno = !isBun && typeof globalThis.Deno !== 'undefined';
const config = typeof PMINIT === 'object' && PMINIT !== null ? PMINIT : {};
const ourPort = Number(config.port);
const stopSignal = config.stopSignal || 'SIGINT';
// `deno serve` run as `deno run` with DENO_AUTO_SERVE (src/runtime.rs):
// Deno's own Deno.serve call for the default export passes port 0 and no
// host, so they are `--port` (our port) and `--host` instead.
const serveMode = config.serve === true;
const denoPort = (port) => (serveMode && !port ? ourPort : port ?? 8000);
const denoHost = (hostname) => (serveMode && !hostname ? config.host : hostname) ?? '0.0.0.0';
const GOING_AWAY = 1001;
// The drain ends a connection once no request has started on it for
// SWEEP_MS (one that has not sent its first request yet: FRESH_MS),
// checked every SWEEP_MS. As in src/preload.mjs.
const SWEEP_MS = 200;
const FRESH_MS = 1000;

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

// `response` with `Connection: close`, so a keep-alive client sends its
// next request elsewhere. Upgrades are left alone.
function closing(response) {
  if (!(response instanceof Response) || response.status === 101) return response;
  try {
    response.headers.set('connection', 'close');
    return response;
  } catch {
    // Immutable headers (Response.redirect, a fetch() response): a copy.
    try {
      const copy = new Response(response.body, response);
      copy.headers.set('connection', 'close');
      return copy;
    } catch {
      return response;
    }
  }
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

// A handler's `result` (a Response or a promise of one); while `drain.on`,
// with Connection: close, and counted in `drain.requests`.
function answerWhileDraining(result, drain) {
  if (!drain.on) return result;
  drain.requests += 1;
  return result instanceof Promise ? result.then(closing) : closing(result);
}

// Starts `drain` (answers carry Connection: close from now on), then calls
// `stop` once no request has arrived for SWEEP_MS, or FRESH_MS after the
// start under load that does not let up: by then every keep-alive client
// has had its Connection: close. Resolves with what `stop` returns.
function quietThen(drain, stop) {
  drain.on = true;
  const since = performance.now();
  return new Promise((resolve) => {
    let seen = -1;
    const timer = setInterval(() => {
      if (drain.requests !== seen && performance.now() - since < FRESH_MS) {
        seen = drain.requests;
        return;
      }
      clearInterval(timer);
      resolve(stop());
    }, SWEEP_MS);
  });
}

// `options` with a `fetch` whose answers close while draining.
function closingWhileDraining(options, drain) {
  const fetch = options.fetch;
  if (typeof fetch !== 'function') return options;
  return {
    ...options,
    fetch(request, server) {
      return answerWhileDraining(fetch.call(this, request, server), drain);
    },
  };
}

// Bun's node:http answers through its own path (the `onNodeHTTPRequest`
// option it gives Bun.serve), not `fetch`, and publishes no request
// diagnostics: its answers get Connection: close from a hook on
// http.Server's 'request' event, put in when the drain starts.
let nodeHttpHooked = false;
async function closeNodeHttpWhileDraining(drain) {
  if (nodeHttpHooked) return;
  nodeHttpHooked = true;
  const http = await import('node:http');
  const emit = http.Server.prototype.emit;
  http.Server.prototype.emit = function pminitEmit(event, request, response) {
    if (event === 'request' && typeof this.address === 'function' && onPort(this.address()?.port)) {
      drain.requests += 1;
      if (response && !response.headersSent) response.setHeader('connection', 'close');
    }
    return emit.apply(this, arguments);
  };
}

// Bun's server.stop() closes at once the connections between keep-alive
// requests and those that have not sent one yet, under a request that may
// be on its way. So first every answer carries Connection: close (each
// keep-alive client then sends its next request elsewhere), and stop()
// comes once the server is quiet (quietThen).
async function drainBun(server, drain, nodeHttp) {
  if (nodeHttp) await closeNodeHttpWhileDraining(drain);
  return quietThen(drain, () => server.stop(false));
}

if (isBun && typeof Bun.serve === 'function') {
  const serve = Bun.serve;
  Bun.serve = function pminitServe(options, ...rest) {
    if (options === null || typeof options !== 'object' || options.unix !== undefined) {
      return serve.call(this, options, ...rest);
    }
    const port = options.port ?? process.env.PORT ?? 3000;
    if (!onPort(port)) return serve.call(this, options, ...rest);
    const drain = { on: false, requests: 0 };
    const ours = closingWhileDraining(trackBunWebSockets({ ...options, reusePort: true }), drain);
    const server = serve.call(this, ours, ...rest);
    adopt(() => drainBun(server, drain, typeof options.onNodeHTTPRequest === 'function'));
    return server;
  };
}

// ---- Deno -----------------------------------------------------------------
//
// Deno.serve's own accept loop cannot stop accepting without dropping
// connections: op_http_serve takes the listener out of the resource table,
// and shutdown() (op_http_close, ext/http/http_next.rs) cancels one handle
// that both ends the accept loop and closes every connection that has not
// delivered a request yet (match_prefix_or_shutdown polls it before
// reading) or sits between keep-alive requests (serve_http11_raw). Under a
// reload that loses the requests on their way. So on $PORT the preload
// accepts itself, from a `Deno.listen({reusePort})` of its own, and hands
// each connection to Deno's HTTP server for one connection
// (Deno[Deno.internal].serveHttpOnConnection, the same native server;
// Deno's tests/unit/serve_test.ts uses it). Then a drain can close the
// listener first and end each connection only when it is quiet. Without
// that internal (another Deno), Deno.serve itself with reusePort
// (denoServeNative); also for TLS and `automaticCompression: false`, which
// the one-connection server does not take, and after a WebSocket upgrade
// (DenoServer).

function denoServeOnConnection() {
  try {
    const internals = typeof Deno.internal === 'symbol' ? Deno[Deno.internal] : undefined;
    const serveOn = internals && internals.serveHttpOnConnection;
    return typeof serveOn === 'function' ? serveOn : undefined;
  } catch {
    return undefined;
  }
}

// What Deno.serve does for a handler error when the app gives no onError.
function internalServerError(error) {
  console.error(error);
  return new Response('Internal Server Error', {
    status: 500,
    headers: { 'content-type': 'text/plain;charset=utf-8' },
  });
}

// Deno.serve itself, with reusePort, its answers closing while it drains:
// {server, drain()}. Its shutdown() ends at once the connections between
// requests and those that have sent nothing yet, so drain() first makes
// the keep-alive clients go (quietThen); what it still cuts off is a
// connection accepted just before and not read yet.
function denoServeNative(serve, options, handler) {
  const drain = { on: false, requests: 0 };
  const answer = handler.length === 0
    ? () => answerWhileDraining(handler(), drain)
    : (request, info) => answerWhileDraining(handler(request, info), drain);
  const server = serve.call(Deno, { ...options, port: Number(denoPort(options.port)),
    hostname: denoHost(options.hostname), reusePort: true }, answer);
  return { server, drain: () => quietThen(drain, () => server.shutdown()) };
}

// The app's handler, counting the requests of connection `c` and the
// answers still to come, and closing connections while `server` drains.
// Deno builds no Request for a handler that takes no arguments: so
// neither does this one then.
function countingHandler(c, server, handler) {
  const answered = (result) => {
    if (!(result instanceof Promise)) return server.draining ? closing(result) : result;
    c.busy += 1;
    return result.then(
      (response) => {
        c.busy -= 1;
        return server.draining ? closing(response) : response;
      },
      (error) => {
        c.busy -= 1;
        throw error;
      },
    );
  };
  if (handler.length === 0) {
    return () => {
      c.requests += 1;
      return answered(handler());
    };
  }
  return (request, info) => {
    c.requests += 1;
    return answered(handler(request, info));
  };
}

// The DenoServers of this worker (a WebSocket upgrade switches them all).
const denoServers = new Set();

// Deno.serve on a listener of our own, one Deno HTTP server per
// connection; what Deno.serve returns (a Deno.HttpServer).
//
// But Deno's one-connection server cannot keep a WebSocket: once the
// upgrade's 101 is out, the connection's HTTP part ends
// (serve_http11_raw returns), op_http_wait resolves, and serveHttpOn's
// `finished` closes that server by force (op_http_close(rid, false)),
// which force-closes the WebSockets upgraded on it (begin_shutdown,
// ext/http/http_next.rs and service.rs): the client sees 1006. So the
// first Deno.upgradeWebSocket in the worker turns it to Deno.serve itself
// for every later connection (toNative); the WebSocket under way is lost.
class DenoServer {
  #denoServe;
  #serveOn;
  #options;
  #handler;
  #onError;
  #listener;
  #connections = new Set();
  #accepting = true;
  #referenced = true;
  #failure = undefined;
  #finished = Promise.withResolvers();
  #shutdown = undefined;
  #sweeper = undefined;
  // After a WebSocket upgrade: {server, drain()} of Deno.serve itself.
  #native = undefined;
  #nativeDone = false;
  draining = false;

  constructor(serve, serveOn, options, handler) {
    this.#denoServe = serve;
    this.#serveOn = serveOn;
    this.#options = options;
    this.#handler = handler;
    this.#onError = typeof options.onError === 'function' ? options.onError : internalServerError;
    this.#listener = Deno.listen({
      hostname: denoHost(options.hostname),
      port: Number(denoPort(options.port)),
      reusePort: true,
      ...(options.tcpBacklog === undefined ? {} : { tcpBacklog: options.tcpBacklog }),
    });
    options.signal?.addEventListener('abort', () => this.#abort(), { once: true });
    this.#acceptAll();
    this.#announce();
    denoServers.add(this);
  }

  get addr() {
    return this.#listener.addr;
  }

  get finished() {
    return this.#finished.promise;
  }

  // Stop accepting (the kernel moves what is queued on this socket to
  // another worker's: tcp_migrate_req), answer every request from now on
  // with Connection: close, end each connection once it is quiet.
  shutdown() {
    if (this.#shutdown === undefined) {
      this.draining = true;
      this.#closeListener();
      this.#sweep();
      this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
      if (typeof Deno.unrefTimer === 'function') Deno.unrefTimer(this.#sweeper);
      this.#native?.drain();
      this.#shutdown = this.#finished.promise.catch(() => {});
    }
    return this.#shutdown;
  }

  // New connections to Deno.serve itself (a second reusePort socket, then
  // ours closes: what is queued on it moves over); ours end as they do.
  toNative() {
    if (this.#native !== undefined || this.draining) return;
    const addr = this.#listener.addr;
    const options = { ...this.#options, hostname: addr.hostname, port: addr.port, onListen() {} };
    this.#native = denoServeNative(this.#denoServe, options, this.#handler);
    if (!this.#referenced) this.#native.server.unref();
    const done = (error) => {
      if (error !== undefined && this.#failure === undefined) this.#failure = error;
      this.#nativeDone = true;
      this.#settle();
    };
    this.#native.server.finished.then(() => done(), done);
    this.#closeListener();
  }

  ref() {
    this.#referenced = true;
    this.#listener.ref();
    this.#native?.server.ref();
    for (const c of this.#connections) c.server.ref();
  }

  unref() {
    this.#referenced = false;
    this.#listener.unref();
    this.#native?.server.unref();
    for (const c of this.#connections) c.server.unref();
  }

  [Symbol.asyncDispose]() {
    return this.shutdown();
  }

  // onListen, or the line Deno.serve prints.
  #announce() {
    const addr = this.#listener.addr;
    if (typeof this.#options.onListen === 'function') {
      this.#options.onListen(addr);
      return;
    }
    const host = addr.hostname.includes(':') ? `[${addr.hostname}]` : addr.hostname;
    const any = addr.hostname === '0.0.0.0' || addr.hostname === '::';
    console.error(`Listening on http://${host}:${addr.port}/${any ? ` (http://localhost:${addr.port}/)` : ''}`);
  }

  async #acceptAll() {
    try {
      for await (const conn of this.#listener) this.#serve(conn);
    } catch (error) {
      // Closed under the loop: the end. Anything else ends the server, as
      // an accept error ends Deno.serve's.
      if (!(error instanceof Deno.errors.BadResource) && !(error instanceof Deno.errors.Interrupted)) {
        this.#failure = error;
      }
    }
    this.#accepting = false;
    this.#settle();
  }

  #serve(conn) {
    const c = { server: undefined, abort: undefined, requests: 0, busy: 0, seen: -1, quietSince: 0, ending: false };
    if (this.#options.signal) c.abort = new AbortController();
    try {
      c.server = this.#serveOn(conn, c.abort?.signal, countingHandler(c, this, this.#handler), this.#onError, () => {});
    } catch (error) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
      console.error(error);
      return;
    }
    if (!this.#referenced) c.server.unref();
    this.#connections.add(c);
    // A connection's end (a reset included) is not the server's failure,
    // as in Deno.serve.
    c.server.finished.catch(() => {}).then(() => {
      this.#connections.delete(c);
      this.#settle();
    });
  }

  // One drain step: end each connection that has been quiet long enough
  // (Deno's graceful shutdown of it finishes a response under way first).
  #sweep() {
    const now = performance.now();
    for (const c of this.#connections) {
      if (c.ending) continue;
      if (c.requests !== c.seen || c.busy > 0) {
        c.seen = c.requests;
        c.quietSince = now;
      } else if (now - c.quietSince >= (c.requests === 0 ? FRESH_MS : SWEEP_MS)) {
        c.ending = true;
        c.server.shutdown().catch(() => {});
      }
    }
  }

  // The app's signal: stop everything now, as Deno.serve does (the native
  // server has the signal too).
  #abort() {
    this.#closeListener();
    for (const c of this.#connections) c.abort.abort();
  }

  #closeListener() {
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
  }

  #settle() {
    if (this.#accepting || this.#connections.size > 0) return;
    if (this.#native !== undefined && !this.#nativeDone) return;
    denoServers.delete(this);
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    if (this.#failure === undefined) this.#finished.resolve();
    else this.#finished.reject(this.#failure);
  }
}

if (isDeno && typeof Deno.serve === 'function') {
  const serve = Deno.serve;
  Deno.serve = function pminitServe(arg1, arg2) {
    const options = typeof arg1 === 'object' && arg1 !== null ? arg1 : undefined;
    const handler = typeof arg1 === 'function' ? arg1 : typeof arg2 === 'function' ? arg2 : options?.handler;
    if (options && (options.path !== undefined || options.cid !== undefined || options.tunnel === true)) {
      return serve.call(this, arg1, arg2);
    }
    if (!onPort(denoPort(options?.port))) return serve.call(this, arg1, arg2);
    const serveOn = denoServeOnConnection();
    const plain = !options || (options.cert === undefined && options.key === undefined &&
      options.automaticCompression !== false);
    if (serveOn && typeof handler === 'function' && plain) {
      const server = new DenoServer(serve, serveOn, options ?? {}, handler);
      adopt(() => server.shutdown());
      return server;
    }
    if (typeof handler !== 'function') return serve.call(this, arg1, arg2); // Deno's own error
    const native = denoServeNative(serve, options ?? {}, handler);
    adopt(native.drain);
    return native.server;
  };
  const upgrade = Deno.upgradeWebSocket;
  if (typeof upgrade === 'function') {
    Deno.upgradeWebSocket = function pminitUpgrade(...args) {
      for (const server of denoServers) server.toNative();
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

// ---- node:http upgrades (ws, socket.io, raw) --------------------------------

// A node:http server's 'upgrade: websocket' sockets on our port, as ws and
// socket.io keep them: on the stop signal each gets a close frame (1001),
// through the ws library's WebSocket when there is one (it then runs the
// closing handshake), else written raw; and is destroyed CLOSE_GRACE_MS
// later, so that a client that never answers cannot hold the exit. Hooked
// on http.Server's emit (one string compare per event), loaded after the
// preload so the app's start-up does not wait for node:http.
const rawWebSockets = new Set();
const CLOSE_GRACE_MS = 2000;
import('node:http').then((http) => {
  const emit = http.Server.prototype.emit;
  http.Server.prototype.emit = function pminitUpgrade(event, request, socket) {
    if (event === 'upgrade' && socket && String(request?.headers?.upgrade).toLowerCase() === 'websocket' &&
        typeof this.address === 'function' && onPort(this.address()?.port)) {
      rawWebSockets.add(socket);
      socket.once('close', () => rawWebSockets.delete(socket));
    }
    return emit.apply(this, arguments);
  };
}, () => {});

function closeRawWebSocket(socket) {
  if (socket.destroyed) return;
  const ws = Object.getOwnPropertySymbols(socket)
    .filter((k) => k.description === 'websocket').map((k) => socket[k])
    .find((w) => w && typeof w.close === 'function');
  try {
    if (ws) ws.close(GOING_AWAY, 'server going away');
    else if (socket.writable) socket.end(new Uint8Array([0x88, 0x02, GOING_AWAY >> 8, GOING_AWAY & 0xff]));
  } catch {
    socket.destroy();
  }
  const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  if (typeof timer.unref === 'function') timer.unref();
  else if (isDeno) Deno.unrefTimer(timer);
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
    server.once('listening', () => adopt(() => drainNetServer(server)));
    return callback ? listen.call(this, options, callback) : listen.call(this, options);
  };
}

// Stops accepting, then waits for the connections. An HTTP server's (Deno's
// node:http is a port of Node's: its connections list, the request
// diagnostics channel, `shouldKeepAlive`) answer with Connection: close
// from now on, and each is ended once quiet, as in src/preload.mjs; Node's
// closeIdleConnections() would end them at once, under a request that may
// be on its way.
function drainNetServer(server) {
  return new Promise((resolve) => {
    let sweeper;
    net.Server.prototype.close.call(server, () => {
      clearInterval(sweeper);
      resolve();
    });
    if (httpConnections(server) === undefined) {
      if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
      return;
    }
    closeHttpWhileDraining(server);
    const lastRead = new Map();
    sweepHttp(server, lastRead);
    sweeper = setInterval(() => sweepHttp(server, lastRead), SWEEP_MS);
  });
}

// The sockets of an HTTP server (Deno's JS connections list), or undefined.
function httpConnections(server) {
  const key = Object.getOwnPropertySymbols(server).find((k) => k.description === 'http.server.connections');
  const list = key === undefined ? undefined : server[key];
  // Deno's primordials' SafeSet, not instanceof Set.
  const all = list && list._all;
  return all && typeof all[Symbol.iterator] === 'function' ? all : undefined;
}

// The HTTP servers draining: their answers carry Connection: close.
const drainingHttp = new Set();
function closeHttpWhileDraining(server) {
  if (drainingHttp.size === 0) {
    diagnostics.subscribe('http.server.request.start', ({ response, server: from }) => {
      if (response && drainingHttp.has(from)) response.shouldKeepAlive = false;
    });
  }
  drainingHttp.add(server);
}

// Ends each connection of `server` with no response under way that has
// read nothing for SWEEP_MS (FRESH_MS before its first byte).
function sweepHttp(server, lastRead) {
  const now = performance.now();
  for (const socket of httpConnections(server) ?? []) {
    if (socket.destroyed) continue;
    const response = socket._httpMessage;
    const read = socket.bytesRead;
    const seen = lastRead.get(socket);
    if ((response && !response.finished) || seen === undefined || seen.read !== read) {
      lastRead.set(socket, { read, at: now });
    } else if (now - seen.at >= (read === 0 ? FRESH_MS : SWEEP_MS)) {
      socket.destroy();
    }
  }
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
  for (const socket of rawWebSockets) closeRawWebSocket(socket);
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
