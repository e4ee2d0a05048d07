// Deno's own server, as a new user writes it (Deno 2.x).
const port: number = Number(Deno.env.get("PORT"));
Deno.serve({ port, onListen() {} }, () => new Response(`pid=${Deno.pid}\n`));
