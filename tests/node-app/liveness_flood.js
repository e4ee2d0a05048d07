// Worker fixture: floods pminit with the healing messages for SECONDS
// (argv[2], default 4): liveness answers ("alive", a heap far from its
// limit) and "look at my memory" reports, written raw to the channel's fd
// as fast as it takes them. Then it idles (and answers pings through the
// preload). Prints "flooding" when it starts and "flood done" after.
'use strict';
const fs = require('node:fs');

const fd = process.channel.fd;
const seconds = Number(process.argv[2] || 4);
const chunk = Buffer.from(
  '{"pminit":"alive","heap_used":1,"heap_limit":100}\n{"pminit":"memory"}\n'.repeat(500),
);
const end = Date.now() + seconds * 1000;
let sent = 0;

function burst() {
  while (Date.now() < end) {
    try {
      sent += fs.writeSync(fd, chunk);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      setImmediate(burst);
      return;
    }
  }
  console.log(`flood done: ${sent} bytes`);
}

console.log('flooding');
burst();
setInterval(() => {}, 1 << 30);
