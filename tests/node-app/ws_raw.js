// WebSockets without a library: the app answers the 'upgrade' itself and
// keeps the raw socket (a minimal RFC 6455 handshake, no frames read).
const http = require('node:http');
const crypto = require('node:crypto');

const server = http.createServer((req, res) => res.end(`pid=${process.pid}\n`));
server.on('upgrade', (req, socket) => {
  const accept = crypto.createHash('sha1')
    .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
    .digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
    `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const text = Buffer.from(`hello pid=${process.pid}`);
  socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
  socket.on('data', () => {});
  socket.on('error', () => {});
});
server.listen(process.env.PORT, () => console.log(`listening pid=${process.pid}`));
