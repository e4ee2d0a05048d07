// Reads its "release" from $RELEASE_FILE at start-up, so a reload picks up
// what is on disk then. "crash": exits 1 at once; "silent": never listens;
// "dies-after-ready": listens (so it is ready), then exits 1 300 ms later;
// anything else is served as the body's version.
const fs = require('node:fs');
const http = require('node:http');

const release = fs.readFileSync(process.env.RELEASE_FILE, 'utf8').trim();
if (release === 'crash') {
  console.error('release is broken');
  process.exit(1);
}
if (release !== 'silent') {
  http
    .createServer((req, res) => res.end(`pid=${process.pid} release=${release}\n`))
    .listen(process.env.PORT, () => {
      console.log(`listening pid=${process.pid} release=${release}`);
      if (release === 'dies-after-ready') {
        setTimeout(() => {
          console.error('release dies right after start-up');
          process.exit(1);
        }, 300);
      }
    });
} else {
  setInterval(() => {}, 1000);
}
