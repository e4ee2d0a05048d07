// Keep-alive hello world for bench/preload_cost.py. PORT when pminit binds
// the port (the preload maps listen(PORT) to its socket), HELLO_PORT when
// the app binds it itself (bare node, pminit --no-preload).
const http = require('node:http');

http
  .createServer((req, res) => res.end('hello\n'))
  .listen(Number(process.env.PORT || process.env.HELLO_PORT), '127.0.0.1', () => {
    console.log(`listening pid=${process.pid}`);
  });
