// A pm2-style app: listens, warms up, then process.send('ready'). The
// warm-up is WARM_UP_MS, or, with READY_ON_USR2 set, until SIGUSR2 comes.
const http = require('node:http');

function ready() {
  if (process.send) process.send('ready');
  console.log(`sent ready pid=${process.pid}`);
}

process.on('SIGUSR1', () => console.log(`got SIGUSR1 pid=${process.pid}`));
http
  .createServer((req, res) => res.end(`pid=${process.pid}\n`))
  .listen(process.env.PORT, () => {
    console.log(`listening pid=${process.pid}`);
    if (process.env.READY_ON_USR2) process.once('SIGUSR2', ready);
    else setTimeout(ready, Number(process.env.WARM_UP_MS || 200));
  });
