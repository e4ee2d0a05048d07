// Grows past --max-memory a moment after it starts listening, once.
const http = require('node:http');

const keep = [];
http.createServer((req, res) => res.end(`pid=${process.pid}\n`)).listen(process.env.PORT, () => {
  console.log(`listening pid=${process.pid}`);
  if (process.env.HOG_ONCE_FILE && !require('node:fs').existsSync(process.env.HOG_ONCE_FILE)) {
    require('node:fs').writeFileSync(process.env.HOG_ONCE_FILE, 'x');
    for (let i = 0; i < 12; i += 1) keep.push(Buffer.alloc(16 << 20, 1));
    console.log(`grew pid=${process.pid}`);
  }
});
