// The benchmark app: the smallest useful HTTP server. Counts the requests it
// served and prints "served pid=P n=N" on SIGUSR2 (pminit forwards it to
// every worker) so the bench can see how evenly connections were spread.
const http = require('node:http');

let served = 0;
const server = http.createServer((req, res) => {
  served += 1;
  res.setHeader('content-type', 'text/plain');
  res.end('ok\n');
});
server.listen(Number(process.env.PORT), () => {
  console.log(`listening pid=${process.pid}`);
});
process.on('SIGUSR2', () => console.log(`served pid=${process.pid} n=${served}`));
process.on('SIGINT', () => server.close(() => process.exit(0)));
