// An HTTP/2 client that keeps one session to 127.0.0.1:PORT, makes a
// request, then prints "goaway code=.." when the server sends GOAWAY and
// "closed" when the session ends. Bounded by LIMIT_MS.
const http2 = require('node:http2');

const session = http2.connect(`http://127.0.0.1:${process.env.PORT}`);
session.on('error', (e) => console.log(`error ${e.message}`));
session.on('goaway', (code) => console.log(`goaway code=${code}`));
session.on('close', () => {
  console.log('closed');
  process.exit(0);
});
const req = session.request({ ':path': '/' });
let body = '';
req.setEncoding('utf8');
req.on('data', (d) => { body += d; });
req.on('end', () => console.log(`answered ${body.trim()}`));
setTimeout(() => {
  console.log('timeout');
  process.exit(1);
}, Number(process.env.LIMIT_MS || 30000)).unref();
