// An API route: which worker answered.
export default function handler(req, res) {
  res.status(200).send(`pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`);
}
