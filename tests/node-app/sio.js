// A socket.io server as its docs show it, unmodified: http server,
// `new Server(httpServer)`, listen(PORT). Each 'echo' is answered through
// its acknowledgement with the text and the worker's pid. Sessions live in
// this process's memory, so with several workers the long-polling
// transport works only if every request of a session reaches this one.
const http = require('node:http');
const { Server } = require('socket.io');

const server = http.createServer((req, res) => {
  res.end(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
const io = new Server(server);
io.on('connection', (socket) => {
  socket.on('echo', (text, ack) => ack({ text, pid: process.pid }));
});
server.listen(process.env.PORT, () => {
  console.log(`listening pid=${process.pid} port=${server.address().port}`);
});
