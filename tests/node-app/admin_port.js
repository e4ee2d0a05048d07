// An express app with a second fixed port besides PORT, as many real
// services have (an admin API, a Prometheus endpoint): ADMIN_PORT. With
// pm2 cluster mode both ports are shared by every worker; so with pminit.
// It also listens for IPC messages as pm2-style apps do, and prints any it
// gets: pminit's own messages must never reach it.
const express = require('express');

process.on('message', (m) => console.log(`app got message ${JSON.stringify(m)}`));

const app = express();
app.get('/', (req, res) => res.send(`pid=${process.pid} main\n`));
const main = app.listen(Number(process.env.PORT), () => {
  console.log(`listening pid=${process.pid} port=${main.address().port}`);
});

const admin = express();
admin.get('/', (req, res) => res.send(`pid=${process.pid} admin\n`));
const second = admin.listen(Number(process.env.ADMIN_PORT), () => {
  console.log(`admin pid=${process.pid} port=${second.address().port} address=${second.address().address}`);
});
