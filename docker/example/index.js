// A plain Node HTTP app. Nothing here knows about pminit: pminit binds PORT,
// and its preload makes listen(PORT) use that socket in every worker.
//
// GET /            -> "hello from worker N pid=P"
// GET /?delay=MS   -> the same, after MS milliseconds (at most 10 s): a
//                     request that is still in flight when a stop begins.
const http = require('node:http');
const net = require('node:net');

let draining = false;

const server = http.createServer((req, res) => {
  const delay = Math.min(Number(new URL(req.url, 'http://x').searchParams.get('delay')) || 0, 10000);
  if (delay) console.log(`worker ${process.env.PMINIT_WORKER}: a request for ${delay} ms`);
  setTimeout(() => {
    // While draining, tell keep-alive clients to reconnect (to another worker).
    if (draining) res.setHeader('connection', 'close');
    res.end(`hello from worker ${process.env.PMINIT_WORKER} pid=${process.pid}\n`);
  }, delay);
});
// Idle keep-alive connections close after 1 s, so a drain ends soon.
server.keepAliveTimeout = 1000;

server.listen(process.env.PORT || 8080, () => {
  console.log(`worker ${process.env.PMINIT_WORKER} listening pid=${process.pid}`);
});

// pminit asks a worker to stop with SIGINT (a reload, `docker stop`,
// Kubernetes). Stop accepting, finish every request in flight, then exit 0.
// net.Server's close keeps open connections (http.Server's would also cut
// idle keep-alive ones, racing a request that is on its way).
process.on('SIGINT', () => {
  console.log(`worker ${process.env.PMINIT_WORKER} pid=${process.pid}: SIGINT, draining`);
  draining = true;
  net.Server.prototype.close.call(server, () => process.exit(0));
});
