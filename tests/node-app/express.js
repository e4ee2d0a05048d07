// An unmodified express app: app.listen(PORT).
const express = require('express');

const app = express();
app.get('/', (req, res) => {
  res.set('x-worker-pid', String(process.pid));
  res.send(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
});
const server = app.listen(Number(process.env.PORT), () => {
  console.log(`listening pid=${process.pid} port=${server.address().port}`);
});
