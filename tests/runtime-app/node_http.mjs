// A plain node:http app, run by Bun or Deno: listen(PORT), nothing else.
import http from 'node:http';
import process from 'node:process';

http.createServer((req, res) => res.end(`pid=${process.pid}\n`)).listen(Number(process.env.PORT));
