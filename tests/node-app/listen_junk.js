// A worker that asks pminit for sockets the way no preload would: junk
// ports and hosts, a flood of 1000 requests at once, more ports than
// pminit shares. It prints what came back, then `done`, and stays up so
// the test can check on pminit.
const free = process.env.FREE_PORTS.split(',').map(Number);
const answers = new Map();
const junk = [
  [1, 0, null],
  [2, 65536, null],
  [3, 'abc', null],
  [4, 9100, 'not-an-ip'],
  [5, 9100, 42],
  [6, 80, null],
];
// One at a time, as the preload asks: 20 distinct free ports on loopback,
// of which pminit shares the first 16.
const ports = free.slice(0, 20).map((p, i) => [2000 + i, p, '127.0.0.1']);
const send = ([id, port, host]) => process.send({ pminit: 'listen', id, port, host });

function flood() {
  // pminit answers what it can; answers that do not fit in the channel
  // are dropped (it never blocks), so count what arrives.
  for (let i = 0; i < 1000; i += 1) send([100 + i, -1, null]);
  setTimeout(() => send(ports[0]), 1000);
}

function report() {
  const show = (id) => `${id}=${answers.get(id)}`;
  console.log(`junk ${junk.map(([id]) => show(id)).join(' ')}`);
  const codes = new Set();
  let got = 0;
  for (let i = 0; i < 1000; i += 1) {
    if (answers.has(100 + i)) {
      got += 1;
      codes.add(answers.get(100 + i));
    }
  }
  console.log(`flood answered=${got} codes=${[...codes].sort().join(',')}`);
  console.log(`ports ${ports.map(([id]) => answers.get(id)).join(' ')}`);
  console.log('done');
}

process.on('internalMessage', (m, handle) => {
  if (!m || m.cmd !== 'NODE_PMINIT_LISTEN') return;
  answers.set(m.id, m.error ? m.error.code : 'fd');
  if (handle) handle.close();
  if (m.id === 6) flood();
  const next = m.id >= 2000 ? m.id - 2000 + 1 : -1;
  if (next > 0 && next < ports.length) send(ports[next]);
  if (next === ports.length) report();
});
for (const r of junk) send(r);
setInterval(() => {}, 1 << 30);
