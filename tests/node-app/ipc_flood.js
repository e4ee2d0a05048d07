// Worker fixture: floods pminit through its Node IPC channel for SECONDS
// (argv[2], default 4): tiny valid lines, a malformed one and a "ready" in
// every chunk, written raw to the channel's fd as fast as it takes them.
// Then it idles. Prints "flooding" when it starts and "flood done" after.
'use strict';
const fs = require('node:fs');

const fd = process.channel.fd;
const seconds = Number(process.argv[2] || 4);
const chunk = Buffer.from('1\n'.repeat(2000) + 'x\n' + '"ready"\n');
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
