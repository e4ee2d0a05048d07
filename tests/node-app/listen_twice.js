// A bug that throws from inside a listen callback, through the preload's
// listen: listening twice on the same server. The stack trace must name
// the preload briefly, not print its whole data: URL.
const http = require('node:http');

const server = http.createServer((req, res) => res.end('ok\n'));
server.listen(Number(process.env.PORT), () => {
  console.log(`listening pid=${process.pid}`);
  server.listen(Number(process.env.PORT));
});
