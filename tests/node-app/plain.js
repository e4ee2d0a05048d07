// An unmodified Node app: plain http, listen(PORT) with no host.
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.setHeader('x-worker-pid', String(process.pid));
  res.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
server.listen(process.env.PORT, () => {
  console.log(`listening pid=${process.pid} port=${server.address().port}`);
});
