// The benchmark app: the smallest useful HTTP server. Counts the requests it
// served and prints "served pid=P n=N" on SIGUSR2 (pminit forwards it to
// every worker) so the bench can see how evenly connections were spread.
const http = require('node:http');
const net = require('node:net');

let served = 0;
let draining = false;
const server = http.createServer((req, res) => {
  served += 1;
  res.setHeader('content-type', 'text/plain');
  // While draining, keep-alive clients are told to reconnect elsewhere.
  if (draining) res.setHeader('connection', 'close');
  res.end('ok\n');
});
server.keepAliveTimeout = 1000;
server.listen(Number(process.env.PORT), () => {
  console.log(`listening pid=${process.pid}`);
});
process.on('SIGUSR2', () => console.log(`served pid=${process.pid} n=${served}`));
// A well-behaved drain (README, "Readiness and rolling reload"): stop
// accepting without cutting open connections, finish what arrives, exit.
// The same app runs under every setup, pm2 included.
process.on('SIGINT', () => {
  draining = true;
  net.Server.prototype.close.call(server, () => process.exit(0));
});
