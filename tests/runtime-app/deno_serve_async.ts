// Deno.serve with an async handler that reads the request (Deno builds a
// Request for it, and the answer comes from a promise).
const port: number = Number(Deno.env.get("PORT"));
Deno.serve({ port, onListen() {} }, async (request) => {
  await request.arrayBuffer();
  return new Response(`pid=${Deno.pid}\n`);
});
