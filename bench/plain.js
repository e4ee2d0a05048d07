// bench/app.js without any signal handler: what most apps look like. Under
// pm2 a reload's SIGINT ends it at once, requests in flight and all; under
// pminit the preload drains it (stop accepting, finish, exit by the signal).
const http = require('node:http');

http
  .createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('ok\n');
  })
  .listen(Number(process.env.PORT), () => console.log(`listening pid=${process.pid}`));
