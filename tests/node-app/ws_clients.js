// N WebSocket clients (the `ws` package) to 127.0.0.1:PORT that print what
// happens to them, one line each: "open pid=..", "close code=.. pid=..".
// Exits once every client has closed, or after LIMIT_MS.
const WebSocket = require('ws');

const n = Number(process.argv[2] || 4);
const port = process.env.PORT;
let left = n;
for (let i = 0; i < n; i += 1) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  let pid = '?';
  ws.on('message', (data) => {
    pid = String(data).split('pid=')[1];
    console.log(`open client=${i} pid=${pid}`);
  });
  ws.on('error', (e) => console.log(`error client=${i} ${e.message}`));
  ws.on('close', (code) => {
    console.log(`close client=${i} code=${code} pid=${pid}`);
    left -= 1;
    if (left === 0) process.exit(0);
  });
}
setTimeout(() => {
  console.log(`timeout ${left} still open`);
  process.exit(1);
}, Number(process.env.LIMIT_MS || 30000)).unref();
