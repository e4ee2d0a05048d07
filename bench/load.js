// autocannon until SIGINT, then its result as one JSON line on stdout:
//   node bench/load.js URL CONNECTIONS [close]
// (the autocannon command line prints nothing when interrupted).
const autocannon = require('autocannon');

const [url, connections, close] = process.argv.slice(2);
const instance = autocannon(
  {
    url,
    connections: Number(connections),
    duration: 600,
    timeout: 5,
    headers: close === 'close' ? { connection: 'close' } : {},
  },
  (err, result) => {
    if (err) {
      console.error(err);
      process.exit(1);
    }
    console.log(JSON.stringify(result));
  },
);
process.on('SIGINT', () => instance.stop());
