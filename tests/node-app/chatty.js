// Writes junk to pminit over its IPC channel before saying it is ready:
// malformed JSON, binary, an empty line, a 100 KB line. pminit must log
// and drop them, and still see the 'ready' that follows.
const fs = require('node:fs');
const http = require('node:http');

const fd = Number(process.env.PMINIT_REPORT_FD);
http.createServer((req, res) => res.end(`pid=${process.pid}\n`)).listen(process.env.PORT, () => {
  fs.writeSync(fd, 'not json\n');
  fs.writeSync(fd, Buffer.from([0xff, 0xfe, 0x00, 0x0a]));
  fs.writeSync(fd, '\n');
  fs.writeSync(fd, `"${'x'.repeat(100 * 1024)}"\n`);
  fs.writeSync(fd, '{"cmd":"NODE_SOMETHING"}\n');
  process.send('ready');
  console.log(`listening pid=${process.pid}`);
});
