// A NestJS app with enableShutdownHooks(), written without the Nest CLI or
// TypeScript: the decorators are applied by hand, as tsc's output would.
// On the stop signal Nest runs its shutdown hooks, closes its HTTP server
// (server.close()), then raises the signal again.
import 'reflect-metadata';
import { Controller, Get, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';

class HelloController {
  hello() {
    return `pid=${process.pid} slot=${process.env.PMINIT_WORKER}\n`;
  }

  onApplicationShutdown(signal) {
    console.log(`shutdown hook pid=${process.pid} signal=${signal}`);
  }
}
Get()(HelloController.prototype, 'hello',
  Object.getOwnPropertyDescriptor(HelloController.prototype, 'hello'));
Controller()(HelloController);

class AppModule {}
Module({ controllers: [HelloController] })(AppModule);

const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
app.enableShutdownHooks();
await app.listen(process.env.PORT);
console.log(`listening pid=${process.pid}`);
