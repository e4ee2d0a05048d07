// A worker that leaks on request, for tests/healing.rs and
// tests/docker_healing.rs. Only the worker of slot $LEAK_SLOT (default 0)
// leaks; the others answer /leak without keeping anything.
//
// GET /        -> "pid=P slot=S"
// GET /pid     -> the same
// GET /heap    -> JSON: pid, slot, v8.getHeapStatistics().heap_size_limit
// GET /leak    -> keeps $LEAK_MIB (default 24) MiB more, as $LEAK_KIND says:
//                 "heap": a JS array of doubles (V8's heap),
//                 "external": a zero-filled Buffer (outside V8's heap,
//                 touched, so resident).
const http = require('node:http');
const v8 = require('node:v8');

const slot = process.env.PMINIT_WORKER;
const leaks = process.env.PMINIT_WORKER === (process.env.LEAK_SLOT || '0');
const kind = process.env.LEAK_KIND || 'heap';
const mib = Number(process.env.LEAK_MIB) || 24;
const kept = [];

function leakOnce() {
  if (kind === 'external') {
    kept.push(Buffer.alloc(mib << 20, 1));
  } else {
    // 8 bytes per element: mib MiB of unboxed doubles on V8's heap.
    kept.push(new Array((mib << 20) / 8).fill(kept.length + 0.5));
  }
}

http
  .createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/heap') {
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
    if (path === '/leak' && leaks) {
      leakOnce();
      res.end(`leaked ${kept.length * mib} MiB pid=${process.pid} slot=${slot}\n`);
      return;
    }
    res.end(`pid=${process.pid} slot=${slot}\n`);
  })
  .listen(process.env.PORT, () => {
    console.log(`listening pid=${process.pid} slot=${slot} leaks=${leaks ? kind : 'no'}`);
  });
