// Takes the README's screenshot of the demo page after a delivered
// notification, through the same parts as the Firefox test:
//   node test/screenshot.js ../docs/demo.png
// (after `web/run-tests.sh` has installed Firefox and the npm packages).

import { resolve } from 'node:path';
import { launchFirefox } from './browsers.js';
import { startStack, stopStack } from './stack.js';

const out = resolve(process.argv[2] || 'demo.png');
const stack = await startStack('screenshot');
const { push, daemon, web } = stack;
let browser;
try {
  browser = await launchFirefox(push);
  const page = await browser.newPage();
  await page.setViewport({ width: 760, height: 900 });
  await page.goto(`${web.origin}/demo/?broker=${encodeURIComponent(daemon.websocketUrl)}&package=demo&user=alice`);
  await page.waitForSelector('#suggested:not([hidden])');
  await page.click('#use-suggested');
  await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'unsubscribed');
  await page.click('#subscribe');
  await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'subscribed');
  await daemon.run('test-push', 'alice', '--package', 'demo', '--title', 'Disk almost full', '--body', 'db1: /var is 91% full');
  await page.waitForFunction(() => document.querySelector('#received strong')?.textContent === 'Disk almost full');
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser?.close();
  await stopStack(stack);
}
