// A socket.io client on the long-polling transport only (what a client
// behind a proxy that blocks WebSockets uses): connects to
// 127.0.0.1:PORT, sends N (default 10) 'echo' messages one after the
// other, each waiting for its acknowledgement, then prints
// "ok sid=.. pids=.." and exits 0. Any error prints "error ..." and exits
// 1; so does LIMIT_MS (default 20 s) without an answer.
const { io } = require('socket.io-client');

const n = Number(process.argv[2] || 10);
const socket = io(`http://127.0.0.1:${process.env.PORT}`, {
  transports: ['polling'],
  reconnection: false,
  timeout: 10000,
});
const fail = (what) => {
  console.log(`error ${what}`);
  process.exit(1);
};
socket.on('connect_error', (e) => fail(`connect_error: ${e.message} ${e.description ?? ''}`));
socket.on('disconnect', (reason, details) => {
  if (reason !== 'io client disconnect') {
    fail(`disconnect: ${reason} ${details?.description?.message ?? details?.context?.responseText ?? ''}`);
  }
});
socket.on('connect', async () => {
  const pids = new Set();
  for (let i = 0; i < n; i += 1) {
    const reply = await socket.timeout(10000).emitWithAck('echo', `m${i}`).catch((e) => fail(`echo ${i}: ${e.message}`));
    if (reply.text !== `m${i}`) fail(`echo ${i}: got ${JSON.stringify(reply)}`);
    pids.add(reply.pid);
  }
  console.log(`ok sid=${socket.io.engine.id} pids=${[...pids].join(',')}`);
  socket.disconnect();
  process.exit(0);
});
setTimeout(() => fail('timeout'), Number(process.env.LIMIT_MS || 20000)).unref();
