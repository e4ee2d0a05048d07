// `deno serve`'s own form (Deno 2.x): a default export with fetch, run as
// `deno serve --port N deno_serve_export.ts`, with no permission flag: deno
// serve grants the address it listens on, and pminit keeps that grant.
export default {
  async fetch(req: Request): Promise<Response> {
    await req.arrayBuffer();
    return new Response(`pid=${Deno.pid}\n`);
  },
};
