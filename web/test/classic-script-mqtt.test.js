// The classic script axion.push.js in MQTT mode: an Axion page that
// includes only that script, its tag naming the broker's WebSocket URL
// (data-broker) and the user's subscribe token, calls axion_push_subscribe()
// and axion_push_unsubscribe(). The script loads axion-push.js and
// mqtt.js's browser build from beside itself, as a site lays them out under
// resource.web/javascript/ — no import map, no build step — and the page
// logs in to the embedded broker as {package}/{user} with its token (the
// confined browser login), reads the daemon's key there and publishes its
// subscription. In Firefox ESR, end to end: the daemon pushes, Firefox
// decrypts, the service worker shows the notification.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { launchFirefox } from './browsers.js';
import { startStack, stopStack } from './stack.js';
import { WEB_ROOT } from './static.js';

const PACKAGE = 'crm';
const USER = 'axion-mqtt-page-user';
const WAIT_MS = 30000;
const TOKEN_SECRET = 'a-secret-the-axion-app-shares-with-axion-push';
const SCRIPTS = '/resource.web/javascript';

let stack;
let push;
let daemon;
let web;
let browser;
let page;

/** The site's script directory: the two scripts and mqtt.js's browser build, side by side. */
const served = (file) => async () => ({ status: 200, file });

before(async () => {
  stack = await startStack(
    'classic-mqtt',
    {
      'GET /tickets/page.html': renderPage,
      [`GET ${SCRIPTS}/axion.push.js`]: served(join(WEB_ROOT, 'axion.push.js')),
      [`GET ${SCRIPTS}/axion-push.js`]: served(join(WEB_ROOT, 'axion-push.js')),
      [`GET ${SCRIPTS}/mqtt.esm.js`]: served(join(WEB_ROOT, 'node_modules', 'mqtt', 'dist', 'mqtt.esm.js')),
    },
    { tokenSecret: TOKEN_SECRET },
  );
  ({ push, daemon, web } = stack);
  browser = await launchFirefox(push);
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  if (stack) await stopStack(stack);
});

const escape = (text) => String(text).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/**
 * An Axion page as its template renders it for the signed-in user: the
 * classic script's one line naming the broker, with a subscribe token the
 * app issued for that user. No VAPID key: the page reads the daemon's over
 * MQTT. The query string overrides attributes (an empty value leaves one out).
 */
async function renderPage(_, req) {
  const attributes = {
    'data-package': PACKAGE,
    'data-user': USER,
    'data-broker': daemon.websocketUrl,
    'data-token': await daemon.token(PACKAGE, USER),
    'data-module': 'tickets',
  };
  for (const [name, value] of new URL(req.url, 'http://x').searchParams) attributes[`data-${name}`] = value;
  const tag = Object.entries(attributes)
    .filter(([, value]) => value)
    .map(([name, value]) => `${name}="${escape(value)}"`)
    .join(' ');
  return {
    status: 200,
    html: `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Ticket #9</title>
<script src="${SCRIPTS}/axion.push.js" ${tag}></script>
</head>
<body><h1>Ticket #9</h1><button onclick="axion_push_subscribe()">Notify me</button></body>
</html>`,
  };
}

async function subscriptions() {
  const { stdout } = await daemon.run('subscriptions', USER, '--package', PACKAGE, '--json');
  return stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

/** Calls a global in the page; resolves with {promise, value} or {promise, error}. */
function call(name) {
  return page.evaluate(async (fn) => {
    const returned = window[fn]();
    const promise = returned instanceof Promise;
    try {
      return { promise, value: await returned };
    } catch (error) {
      return { promise, error: { name: error.name, code: error.code, message: error.message } };
    }
  }, name);
}

test('a page with only the classic script naming the broker subscribes over MQTT, and a push arrives', async () => {
  await page.goto(`${web.origin}/tickets/page.html`);
  const loaded = await page.evaluate(() => ({
    subscribe: typeof window.axion_push_subscribe,
    unsubscribe: typeof window.axion_push_unsubscribe,
    modules: document.querySelectorAll('script[type="module"], script[type="importmap"]').length,
  }));
  assert.deepEqual(loaded, { subscribe: 'function', unsubscribe: 'function', modules: 0 });

  const registered = push.waitFor('register', () => true, 'register from Firefox', WAIT_MS);
  // The page's own subscribe command, answered on its user's result topic.
  const { report } = await daemon.nextResult(PACKAGE, USER, (r) => r.command === 'subscribe');
  const result = await call('axion_push_subscribe');
  assert.equal(result.error, undefined, JSON.stringify(result.error));
  assert.equal(result.promise, true, 'axion_push_subscribe() returns a Promise');
  assert.equal(result.value.state, 'subscribed', JSON.stringify(result.value));
  const answered = await report;
  assert.equal(answered.ok, true, JSON.stringify(answered));

  const { channelID } = await registered;
  const endpoint = `${push.origin}/wpush/${channelID}`;
  assert.equal(result.value.endpoint, endpoint);
  const rows = await subscriptions();
  assert.deepEqual(rows.map((r) => [r.endpoint, r.active, r.module]), [[endpoint, true, 'tickets']]);
  // The key the page read from the broker is the daemon's.
  const key = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.getSubscription();
    const bytes = new Uint8Array(subscription.options.applicationServerKey);
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  });
  assert.equal(key, await daemon.vapidPublicKey());

  const title = `Ticket #9 updated ${Date.now()}`;
  // The service worker tells open pages once it has shown a notification.
  await page.evaluate((t, ms) => {
    window.shown = new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error('the service worker showed no notification')), ms);
      navigator.serviceWorker.addEventListener('message', (event) => {
        if (event.data?.type === 'axion-push:push' && event.data.title === t) resolve(event.data);
      });
    });
  }, title, WAIT_MS);
  const acked = push.waitFor('ack', (a) => a.channelID === channelID, 'ack from Firefox', WAIT_MS);
  await daemon.run('test-push', USER, '--package', PACKAGE, '--title', title, '--body', 'Assigned to you');
  assert.equal((await acked).code, 100, "Firefox could not decrypt the daemon's push");
  await page.evaluate(() => window.shown);
  const shown = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    return (await registration.getNotifications()).map((n) => ({ title: n.title, body: n.body }));
  });
  assert.deepEqual(shown.filter((n) => n.title === title), [{ title, body: 'Assigned to you' }]);
});

test('receipts the service worker kept while no page was open go out when a page with the classic script opens, without a click', async () => {
  const [row] = await subscriptions();
  assert.equal(row?.active, true, 'the previous test subscribed');
  const channelID = row.endpoint.split('/').pop();
  // No page of the site open: the worker keeps the push's shown receipt.
  await page.goto('about:blank');
  const acked = push.waitFor('ack', (a) => a.channelID === channelID, 'ack from Firefox', WAIT_MS);
  const sent = await daemon.command(PACKAGE, USER, 'send', { title: `While away ${Date.now()}` });
  assert.equal(sent.delivered, 1, JSON.stringify(sent));
  assert.equal((await acked).code, 100, "Firefox could not decrypt the daemon's push");

  const { report } = await daemon.nextResult(
    PACKAGE,
    USER,
    (r) => r.command === 'receipt' && r.send_id === sent.id,
    WAIT_MS,
  );
  // The page only loads: nothing on it is called.
  await page.goto(`${web.origin}/tickets/page.html`);
  const receipt = await report;
  assert.deepEqual([receipt.ok, receipt.receipt], [true, 'shown'], JSON.stringify(receipt));
});

test('axion_push_unsubscribe() over MQTT stops Firefox and deactivates the subscription in the daemon', async () => {
  const [row] = await subscriptions();
  assert.equal(row?.active, true, 'the previous test subscribed');
  const unregistered = push.waitFor('unregister', () => true, 'unregister from Firefox', WAIT_MS);
  const { report } = await daemon.nextResult(PACKAGE, USER, (r) => r.command === 'unsubscribe');
  const result = await call('axion_push_unsubscribe');
  assert.equal(result.error, undefined, JSON.stringify(result.error));
  assert.equal(result.promise, true, 'axion_push_unsubscribe() returns a Promise');
  assert.equal(result.value.state, 'unsubscribed');
  await unregistered;
  assert.equal((await report).ok, true);
  assert.deepEqual((await subscriptions()).filter((r) => r.active), []);
});

/** Loads the page with `query` and calls axion_push_subscribe(); resolves with the error. */
async function subscribeError(query) {
  await page.goto(`${web.origin}/tickets/page.html?${query}`);
  const result = await call('axion_push_subscribe');
  assert.ok(result.error, `it subscribed: ${JSON.stringify(result.value)}`);
  assert.equal(result.promise, true);
  return result.error;
}

test('a token the broker refuses rejects with login-refused, in words', async () => {
  const othersToken = await daemon.token(PACKAGE, 'someone-else');
  for (const query of ['token=', `token=${encodeURIComponent(othersToken)}`]) {
    const error = await subscribeError(query);
    assert.deepEqual([error.name, error.code], ['AxionPushError', 'login-refused'], JSON.stringify(error));
    assert.match(error.message, /did not accept this page’s sign-in: its token is missing, wrong or has expired/);
  }
});

test('a page set up wrongly rejects with an AxionPushError that says so: mqtt.js not where the tag says, no broker', async () => {
  const error = await subscribeError('mqtt-js=/nowhere/mqtt.esm.js');
  assert.deepEqual([error.name, error.code], ['AxionPushError', 'failed']);
  assert.match(error.message, /could not load http:\/\/127\.0\.0\.1:\d+\/nowhere\/mqtt\.esm\.js/);
  const noChannel = await subscribeError('broker=');
  assert.deepEqual([noChannel.name, noChannel.code], ['AxionPushError', 'no-channel']);
  assert.match(noChannel.message, /its axion\.push\.js tag names no data-relay or data-broker\)/);
});
