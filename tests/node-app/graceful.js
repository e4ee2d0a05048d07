// An app with a well-behaved drain of its own: on SIGINT it stops
// accepting (net.Server's close, which keeps open connections), answers
// every request that still arrives with Connection: close, and exits once
// its last connection is gone.
const http = require('node:http');
const net = require('node:net');

let draining = false;
const server = http.createServer((req, res) => {
  if (draining) res.setHeader('connection', 'close');
  res.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
server.keepAliveTimeout = 1000;
server.listen(process.env.PORT, () => console.log(`listening pid=${process.pid}`));
process.on('SIGINT', () => {
  draining = true;
  net.Server.prototype.close.call(server, () => process.exit(0));
});
