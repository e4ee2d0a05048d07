// Leaves orphans behind: a child starts three grandchildren in their own
// sessions and exits at once, so they are reparented to pminit. Each exits
// shortly after; unless pminit reaps it, it stays a zombie.
const { spawn } = require('node:child_process');

if (process.argv[2] === 'middle') {
  for (let i = 0; i < 3; i++) {
    spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300)'], {
      detached: true,
      stdio: 'ignore',
    }).unref();
  }
  process.exit(0);
}
const middle = spawn(process.execPath, [__filename, 'middle'], { stdio: 'inherit' });
middle.on('exit', () => console.log(`orphans made pid=${process.pid}`));
setInterval(() => {}, 1 << 30);
process.on('SIGINT', () => process.exit(0));
