// A minimal Next.js app for pminit's tests (built by scripts/test.sh).
module.exports = {};
