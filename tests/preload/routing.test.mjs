// The preload's listen decision as a table: listen()'s arguments and the
// declared sockets in, where the listen goes out. No process is started:
// importing the preload without PMINIT_* variables changes nothing here.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { listenRequest, route } from '../../src/preload.mjs';

const cb = () => {};
const fixed = { fd: 3, port: 8080, host: '127.0.0.1' };
const fixed6 = { fd: 4, port: 8080, host: '::1' };
const any = { fd: 5, port: 3000, host: '::', any: true };
const unix = { fd: 6, path: '/run/app.sock' };
const sockets = [fixed, fixed6, any, unix];

test('listen() arguments are read as Node reads them', () => {
  const table = [
    [[3000], { port: 3000, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
    [['3000', cb], { port: '3000', host: undefined, path: undefined, ipv6Only: false, callback: cb }],
    [[3000, '127.0.0.1', 511, cb], { port: 3000, host: '127.0.0.1', path: undefined, ipv6Only: false, callback: cb }],
    [[3000, 511, cb], { port: 3000, host: undefined, path: undefined, ipv6Only: false, callback: cb }],
    [[3000, ''], { port: 3000, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
    [['/run/app.sock', cb], { port: undefined, host: undefined, path: '/run/app.sock', ipv6Only: false, callback: cb }],
    [[{ port: 3000, host: '::1', ipv6Only: true }], { port: 3000, host: '::1', path: undefined, ipv6Only: true, callback: undefined }],
    [[{ port: 3000, host: null }], { port: 3000, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
    [[{ path: '/run/app.sock', port: 1 }], { port: undefined, host: undefined, path: '/run/app.sock', ipv6Only: false, callback: undefined }],
    // Handles and fds are none of ours.
    [[{ fd: 3 }], { port: undefined, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
    [[{ _handle: {} }, cb], { port: undefined, host: undefined, path: undefined, ipv6Only: false, callback: cb }],
    [[{ handle: {} }], { port: undefined, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
    [[], { port: undefined, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
    [[null], { port: undefined, host: undefined, path: undefined, ipv6Only: false, callback: undefined }],
  ];
  for (const [args, want] of table) {
    assert.deepEqual(listenRequest(args), want, JSON.stringify(args));
  }
});

test('a listen goes to a declared fd, to pminit, or to Node', () => {
  const fd = (socket) => ({ to: 'fd', socket });
  const ask = (port) => ({ to: 'pminit', port });
  const node = { to: 'node' };
  // [listen() arguments, may ask pminit, where it goes]
  const table = [
    // --listen's port: the operator's address wins, whatever the app names.
    [[8080], true, fd(fixed)],
    [['8080'], true, fd(fixed)],
    [[8080, '::1'], true, fd(fixed6)],
    [[8080, '0.0.0.0'], true, fd(fixed)],
    [[{ port: 8080, host: 'localhost' }], false, fd(fixed)],
    // $PORT's wildcard: for no host or the wildcard itself; another host is
    // asked of pminit (which moves the socket), or, if it cannot be asked,
    // the wildcard serves.
    [[3000], true, fd(any)],
    [[3000, '::'], true, fd(any)],
    [[3000, '127.0.0.1'], true, ask(3000)],
    [[3000, 'localhost'], true, ask(3000)],
    [[3000, '127.0.0.1'], false, fd(any)],
    // Paths: declared ones only.
    [['/run/app.sock'], true, fd(unix)],
    [[{ path: '/run/app.sock' }], false, fd(unix)],
    [['/run/other.sock'], true, node],
    // Other ports: asked, when pminit can be asked.
    [[9100], true, ask(9100)],
    [[{ port: '9100', host: '127.0.0.1' }], true, ask(9100)],
    [[9100], false, node],
    [[{ port: 9100, ipv6Only: true }], true, node],
    // Ephemeral, absent and invalid ports: Node's own (and its errors).
    [[0], true, node],
    [['0'], true, node],
    [[], true, node],
    [[{ port: 65536 }], true, node],
    [[{ port: -1 }], true, node],
    [[{ port: 80.5 }], true, node],
    [[{ port: 80, host: ['x'] }], true, node],
    [[{ fd: 3 }], true, node],
  ];
  for (const [args, askable, want] of table) {
    assert.deepEqual(route(listenRequest(args), sockets, askable), want, `${JSON.stringify(args)} askable=${askable}`);
  }
});
