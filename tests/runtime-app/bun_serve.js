// Bun's own server, as a new user writes it: the port comes from $PORT
// (Bun.serve's default). No signal handling: pminit's preload drains it.
Bun.serve({
  fetch() {
    return new Response(`pid=${process.pid}\n`);
  },
});
