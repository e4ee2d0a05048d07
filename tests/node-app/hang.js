// A worker that can be made to hang or to be busy, for tests/healing.rs.
//
// GET /           -> "pid=P slot=S"
// GET /hang       -> the first worker to take it (it creates $HANG_MARKER,
//                    holding its pid) answers "hanging pid=P", stops taking
//                    connections, finishes the ones it has, then spins
//                    forever in a synchronous loop: its event loop is stuck,
//                    the process is alive. Any later /hang: "not hanging".
// GET /busy?ms=N  -> a synchronous loop of N ms (wall clock), then
//                    "busy pid=P": slow, not hung.
// GET /heap       -> JSON: pid, slot, v8.getHeapStatistics().heap_size_limit
//
// $STARTUP_SPIN_MS: a synchronous loop that long before listening (a slow
// start-up that blocks the event loop before the worker is ready).
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const v8 = require('node:v8');

function spinFor(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // Busy: nothing else runs on this thread meanwhile.
  }
}

function spinForever() {
  for (;;) {
    // Hung.
  }
}

const slot = process.env.PMINIT_WORKER;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/hang') {
    let mine = false;
    try {
      fs.writeFileSync(process.env.HANG_MARKER, String(process.pid), { flag: 'wx' });
      mine = true;
    } catch {
      // Another worker hangs already.
    }
    if (!mine) {
      res.end(`not hanging pid=${process.pid} slot=${slot}\n`);
      return;
    }
    console.log(`hanging pid=${process.pid} slot=${slot}`);
    res.setHeader('connection', 'close');
    res.end(`hanging pid=${process.pid} slot=${slot}\n`);
    // net.Server's close: stop accepting (the other workers take the
    // queue), call back once the connections in hand are done.
    net.Server.prototype.close.call(server, () => setImmediate(spinForever));
    return;
  }
  if (url.pathname === '/busy') {
    const ms = Math.min(Number(url.searchParams.get('ms')) || 0, 60000);
    spinFor(ms);
    res.end(`busy ${ms} ms pid=${process.pid} slot=${slot}\n`);
    return;
  }
  if (url.pathname === '/heap') {
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        pid: process.pid,
        slot,
        heap_size_limit: v8.getHeapStatistics().heap_size_limit,
      }),
    );
    return;
  }
  res.end(`pid=${process.pid} slot=${slot}\n`);
});

const startupSpin = Number(process.env.STARTUP_SPIN_MS) || 0;
if (startupSpin) {
  console.log(`spinning ${startupSpin} ms before listening pid=${process.pid}`);
  spinFor(startupSpin);
}
server.listen(process.env.PORT, () => {
  console.log(`listening pid=${process.pid} slot=${slot}`);
});
