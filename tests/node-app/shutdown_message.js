// pm2's shutdown message (Windows-friendly graceful stop): exit on it.
const http = require('node:http');

const server = http.createServer((req, res) => res.end(`pid=${process.pid}\n`));
server.listen(process.env.PORT, () => console.log(`listening pid=${process.pid}`));
process.on('message', (m) => {
  if (m === 'shutdown') {
    console.log(`got shutdown pid=${process.pid}`);
    server.close(() => process.exit(0));
  }
});
process.on('SIGINT', () => console.log(`got SIGINT pid=${process.pid}`));
