// An app that takes PORT itself with SO_REUSEPORT (Node >= 22.12's
// listen({reusePort: true})), as run with --no-preload.
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
server.listen({ port: Number(process.env.PORT), reusePort: true }, () => {
  console.log(`listening pid=${process.pid} port=${server.address().port}`);
});
