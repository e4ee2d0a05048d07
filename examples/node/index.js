// A plain Node app: nothing in it knows about pminit.
//
//   PORT=3000 pminit -i 4 -- node index.js
//
// pminit binds PORT once, before any worker starts; its preload makes this
// listen(PORT) use that socket, so four workers answer on one port with no
// proxy in between.
const http = require('node:http');

const server = http
  .createServer((req, res) => {
    res.end(`hello from worker ${process.env.PMINIT_WORKER} pid=${process.pid}\n`);
  })
  .listen(process.env.PORT || 3000, () => {
    console.log(`listening pid=${process.pid} worker=${process.env.PMINIT_WORKER}`);
  });

// pminit asks a worker to stop with SIGINT (SIGKILL after --kill-timeout).
// Without a handler Node exits at once and drops requests in flight; here
// the server stops accepting, finishes them, closes idle keep-alive
// connections (Node >= 19 does that in close()), and the process exits 0.
process.on('SIGINT', () => server.close(() => process.exit(0)));
