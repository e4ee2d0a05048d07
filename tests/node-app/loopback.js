// An unmodified app that listens on PORT at one host only: BIND_HOST
// (default 127.0.0.1; `localhost` as fastify's default). pminit must not
// make it reachable on any other address.
const http = require('node:http');

const host = process.env.BIND_HOST || '127.0.0.1';
const server = http.createServer((req, res) => {
  res.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
server.listen(Number(process.env.PORT), host, () => {
  const a = server.address();
  console.log(`listening pid=${process.pid} port=${a.port} address=${a.address}`);
});
