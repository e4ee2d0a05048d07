#!/usr/bin/env node
// A start script as frameworks ship them (node_modules/.bin/next,
// nest start, ...): run as `pminit -- ./bin/serve.js`, no `node` in sight.
require('../plain.js');
