// Node's own cluster module running bench/app.js in N workers:
//   node bench/cluster.js N
// The primary accepts every connection and hands it to a worker (round
// robin, Node's default on Linux): the proxy-free alternative inside Node.
const cluster = require('node:cluster');
const path = require('node:path');

if (cluster.isPrimary) {
  const n = Number(process.argv[2] || 2);
  cluster.setupPrimary({ exec: path.join(__dirname, 'app.js') });
  for (let i = 0; i < n; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGINT');
    cluster.disconnect(() => process.exit(0));
  });
}
