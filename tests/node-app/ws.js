// An HTTP server with WebSockets (the `ws` package) on the same port, as a
// chat or live-update service has: the connections never end by
// themselves. Nothing here knows about pminit or handles signals.
const http = require('node:http');
const { WebSocketServer } = require('ws');

const server = http.createServer((req, res) => {
  res.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => ws.send(`hello pid=${process.pid}`));
server.listen(process.env.PORT, () => console.log(`listening pid=${process.pid}`));
