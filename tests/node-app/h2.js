// An HTTP/2 server (node:http2, cleartext, prior knowledge): sessions stay
// open between requests and never end by themselves.
const http2 = require('node:http2');

const server = http2.createServer();
server.on('stream', (stream) => {
  stream.respond({ ':status': 200 });
  stream.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
server.listen(process.env.PORT, () => console.log(`listening pid=${process.pid}`));
