// The app of tests/ecosystem.rs: listens on PORT; says ready
// (process.send('ready'), pm2's wait_ready) only when SIGUSR2 comes;
// answers with what its environment holds; and ignores the stop signal, so
// that only the kill timeout ends it.
const http = require('node:http');

process.on('SIGINT', () => console.log(`ignoring SIGINT pid=${process.pid}`));
process.on('SIGUSR2', () => {
  if (process.send) process.send('ready');
  console.log(`sent ready pid=${process.pid}`);
});
http
  .createServer((req, res) => {
    const e = process.env;
    res.end(`pid=${process.pid} env=${e.NODE_ENV} greeting=${e.GREETING} inst=${e.INSTANCE_ID}\n`);
  })
  .listen(process.env.PORT, () => console.log(`listening pid=${process.pid}`));
