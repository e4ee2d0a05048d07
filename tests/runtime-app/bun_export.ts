// Bun's other way to serve, as its docs show it: a default export with
// fetch (and the port from $PORT, Bun's default), which Bun serves itself
// through Bun.serve when it runs the file.
export default {
  fetch(): Response {
    return new Response(`pid=${process.pid}\n`);
  },
};
