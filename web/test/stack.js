// Everything a browser test talks to, started together: a temporary
// directory, the test push service, web/ served on loopback (with the host
// app's `routes`, see serveWeb), and the daemon trusting the push service
// and admitting the site's pages (optionally requiring subscribe tokens).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Daemon } from './daemon.js';
import { PushService } from './push-service.js';
import { serveWeb } from './static.js';

export async function startStack(name, routes, { tokenSecret, receiptClicks } = {}) {
  const stack = { dir: mkdtempSync(join(tmpdir(), `axion-push-${name}-`)) };
  try {
    stack.push = await PushService.start(stack.dir);
    // The site first: its pages are the only ones the WebSocket listener admits.
    stack.web = await serveWeb(routes);
    stack.daemon = await Daemon.start(stack.dir, stack.push.caPath, new URL(stack.push.origin).port, {
      origins: [stack.web.origin],
      tokenSecret,
      receiptClicks,
    });
  } catch (error) {
    await stopStack(stack);
    throw error;
  }
  return stack;
}

/** Stops what `startStack` started (KEEP_TEST_DIR=1 keeps the directory and the daemon's log). */
export async function stopStack(stack) {
  await stack.daemon?.stop();
  await stack.web?.stop();
  await stack.push?.stop();
  if (!process.env.KEEP_TEST_DIR) rmSync(stack.dir, { recursive: true, force: true });
}
