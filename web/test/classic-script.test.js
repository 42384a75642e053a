// Axion's pages as they were written for the Python module: a page that
// includes only the classic script axion.push.js (no module, no build step),
// configured on its own tag, and calls the globals axion_push_subscribe()
// and axion_push_unsubscribe(). In Firefox ESR, end to end: the
// subscription goes to the host app's relay, whose handler records it as
// ObjNotifyPush.subscribe() does (an MQTT subscribe command); the daemon
// pushes; Firefox decrypts and the service worker shows the notification.

import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { after, before, test } from 'node:test';
import { launchFirefox } from './browsers.js';
import { startStack, stopStack } from './stack.js';

const PACKAGE = 'crm';
const USER = 'axion-page-user';
const WAIT_MS = 30000;
/** The daemon requires subscribe tokens; the relay makes its own, as ObjNotifyPush does. */
const TOKEN_SECRET = 'a-secret-the-host-app-shares-with-axion-push';

let stack;
let push;
let daemon;
let web;
let browser;
let page;
let vapidPublicKey;

/** What the relay was asked, in order. */
const relayed = new EventEmitter();

before(async () => {
  stack = await startStack(
    'classic',
    {
      'GET /tickets/page.html': renderPage,
      'POST /push/subscription': relay,
      'POST /push/broken': async () => ({ status: 503, json: { error: 'database down' } }),
    },
    { tokenSecret: TOKEN_SECRET },
  );
  ({ push, daemon, web } = stack);
  vapidPublicKey = await daemon.vapidPublicKey();
  browser = await launchFirefox(push);
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  if (stack) await stopStack(stack);
});

const escape = (text) => String(text).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/**
 * An Axion page as its template renders it: the classic script's one line
 * with the signed-in user, the relay and the daemon's key. The query string
 * overrides attributes (an empty value leaves one out).
 */
function renderPage(_, req) {
  const attributes = {
    'data-package': PACKAGE,
    'data-user': USER,
    'data-relay': '/push/subscription',
    'data-vapid-public-key': vapidPublicKey,
    'data-token': 'token-from-the-template',
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
<head><meta charset="utf-8"><title>Ticket #7</title>
<script src="/axion.push.js" ${tag}></script>
</head>
<body><h1>Ticket #7</h1><button onclick="axion_push_subscribe()">Notify me</button></body>
</html>`,
  };
}

/**
 * The host app's relay handler: it would check who is signed in and call
 * ObjNotifyPush.subscribe_result(user, package, subscription_json,
 * user_agent, module=…), which publishes this subscribe command with a
 * token it makes for the user, and answer a refusal with the daemon's
 * `code` (clients/python/examples/subscription_relay.py).
 */
async function relay(body) {
  const request = JSON.parse(body);
  relayed.emit('request', request);
  const token = await daemon.token(request.package, request.user);
  if (request.action === 'subscribe') {
    const report = await daemon.command(request.package, request.user, 'subscribe', {
      ...request.subscription,
      user_agent: request.user_agent,
      module: request.module,
      token,
    });
    return report.ok ? { status: 204 } : { status: report.code ? 409 : 422, json: { error: report.error, code: report.code } };
  }
  if (request.action === 'unsubscribe') {
    await daemon.command(request.package, request.user, 'unsubscribe', { endpoint: request.endpoint, token });
    return { status: 204 };
  }
  return { status: 400, json: { error: `unknown action ${request.action}` } };
}

/** The next request the relay gets that passes `test`. */
function nextRelayed(test, what) {
  const promise = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the relay got no ${what} within ${WAIT_MS / 1000} s`)), WAIT_MS);
    relayed.on('request', function listener(request) {
      if (!test(request)) return;
      clearTimeout(timer);
      relayed.off('request', listener);
      resolve(request);
    });
  });
  promise.catch(() => {}); // awaited later
  return promise;
}

async function subscriptions(user = USER) {
  const { stdout } = await daemon.run('subscriptions', user, '--package', PACKAGE, '--json');
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

test('a page with only the classic script subscribes with axion_push_subscribe(), and a push arrives', async () => {
  await page.goto(`${web.origin}/tickets/page.html`);
  const loaded = await page.evaluate(() => ({
    subscribe: typeof window.axion_push_subscribe,
    unsubscribe: typeof window.axion_push_unsubscribe,
    modules: document.querySelectorAll('script[type="module"], script[type="importmap"]').length,
  }));
  assert.deepEqual(loaded, { subscribe: 'function', unsubscribe: 'function', modules: 0 });

  const registered = push.waitFor('register', () => true, 'register from Firefox', WAIT_MS);
  const asked = nextRelayed((r) => r.action === 'subscribe', 'subscribe');
  const result = await call('axion_push_subscribe');
  assert.equal(result.error, undefined, JSON.stringify(result.error));
  assert.equal(result.promise, true, 'axion_push_subscribe() returns a Promise');
  assert.equal(result.value.state, 'subscribed', JSON.stringify(result.value));

  const { channelID } = await registered;
  const endpoint = `${push.origin}/wpush/${channelID}`;
  const request = await asked;
  assert.equal(request.package, PACKAGE);
  assert.equal(request.user, USER);
  assert.equal(request.subscription.endpoint, endpoint);
  assert.ok(request.subscription.keys.p256dh && request.subscription.keys.auth, JSON.stringify(request));
  assert.equal(request.module, 'tickets');
  assert.equal(request.token, 'token-from-the-template');
  assert.match(request.user_agent, /Firefox/);
  const rows = await subscriptions();
  assert.deepEqual(rows.map((r) => [r.endpoint, r.active]), [[endpoint, true]]);

  const title = `Ticket #7 updated ${Date.now()}`;
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
  await daemon.run('test-push', USER, '--package', PACKAGE, '--title', title, '--body', 'Status: closed');
  assert.equal((await acked).code, 100, "Firefox could not decrypt the daemon's push");
  await page.evaluate(() => window.shown);
  const shown = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    return (await registration.getNotifications()).map((n) => ({ title: n.title, body: n.body }));
  });
  assert.deepEqual(shown.filter((n) => n.title === title), [{ title, body: 'Status: closed' }]);
});

test('axion_push_unsubscribe() stops Firefox and has the relay deactivate it in the daemon', async () => {
  const [row] = await subscriptions();
  const unregistered = push.waitFor('unregister', () => true, 'unregister from Firefox', WAIT_MS);
  const asked = nextRelayed((r) => r.action === 'unsubscribe', 'unsubscribe');
  const result = await call('axion_push_unsubscribe');
  assert.equal(result.error, undefined, JSON.stringify(result.error));
  assert.equal(result.promise, true, 'axion_push_unsubscribe() returns a Promise');
  assert.equal(result.value.state, 'unsubscribed');
  await unregistered;
  const request = await asked;
  assert.deepEqual([request.package, request.user, request.endpoint], [PACKAGE, USER, row.endpoint]);
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

test('a page set up wrongly rejects with an AxionPushError that says so', async () => {
  const noRelay = await subscribeError('relay=');
  assert.deepEqual([noRelay.name, noRelay.code], ['AxionPushError', 'no-channel']);
  assert.match(noRelay.message, /not set up correctly on this page \(its axion\.push\.js tag names no data-relay or data-broker\)/);

  const noKey = await subscribeError('vapid-public-key=');
  assert.deepEqual([noKey.name, noKey.code], ['AxionPushError', 'no-vapid-key']);
  assert.match(noKey.message, /data-vapid-public-key/);

  const noUser = await subscribeError('user=');
  assert.deepEqual([noUser.name, noUser.code], ['AxionPushError', 'failed']);
  assert.match(noUser.message, /needs data-package and data-user/);

  const noModule = await subscribeError('axion-push-js=/nowhere/axion-push.js');
  assert.deepEqual([noModule.name, noModule.code], ['AxionPushError', 'failed']);
  assert.match(noModule.message, /could not load http:\/\/127\.0\.0\.1:\d+\/nowhere\/axion-push\.js/);
});

test('a relay that fails rejects with relay-failed and its answer', async () => {
  const error = await subscribeError('relay=/push/broken');
  assert.deepEqual([error.name, error.code], ['AxionPushError', 'relay-failed']);
  assert.match(error.message, /The app’s server did not accept the subscription: it answered 503: .*database down/);
});

test('a page whose browser another user subscribed makes a fresh subscription when the daemon refuses that one', async () => {
  // A shared computer: ann subscribed this Firefox, then ben signs in.
  await page.goto(`${web.origin}/tickets/page.html?user=ann`);
  const ann = await call('axion_push_subscribe');
  assert.equal(ann.error, undefined, JSON.stringify(ann.error));
  const annEndpoint = ann.value.endpoint;
  const annChannel = annEndpoint.split('/').pop();

  await page.goto(`${web.origin}/tickets/page.html?user=ben`);
  const refused = nextRelayed((r) => r.action === 'subscribe' && r.user === 'ben', 'ben\'s subscribe');
  const dropped = push.waitFor('unregister', (u) => u.channelID === annChannel, 'unregister of ann\'s subscription', WAIT_MS);
  const registered = push.waitFor('register', () => true, 'a register for ben', WAIT_MS);
  const ben = await call('axion_push_subscribe');
  assert.equal(ben.error, undefined, JSON.stringify(ben.error));
  assert.equal(ben.value.state, 'subscribed', JSON.stringify(ben.value));
  assert.equal((await refused).subscription.endpoint, annEndpoint, 'the relay was first given ann\'s endpoint');
  await dropped;
  const { channelID } = await registered;
  const benEndpoint = `${push.origin}/wpush/${channelID}`;
  assert.equal(ben.value.endpoint, benEndpoint);
  const active = async (user) => (await subscriptions(user)).filter((r) => r.active).map((r) => r.endpoint);
  assert.deepEqual(await active('ben'), [benEndpoint]);
  assert.deepEqual(await active('ann'), [annEndpoint], 'ann\'s row stays until a push finds it gone');

  const acked = push.waitFor('ack', (a) => a.channelID === channelID, 'ack of ben\'s push', WAIT_MS);
  const toBen = await daemon.command(PACKAGE, 'ben', 'send', { title: 'For ben' });
  assert.equal(toBen.delivered, 1, JSON.stringify(toBen));
  assert.equal((await acked).code, 100);
  const toAnn = await daemon.command(PACKAGE, 'ann', 'send', { title: 'For ann' });
  assert.deepEqual([toAnn.delivered, toAnn.deactivated], [0, 1], JSON.stringify(toAnn));
  assert.deepEqual(await active('ann'), []);
});
