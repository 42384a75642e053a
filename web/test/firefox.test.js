// The whole path in a real browser: Firefox ESR, headless, subscribes on the
// demo page through axion-push.js; the subscription reaches the daemon over
// MQTT-over-WebSocket, the page logged in as its user with a subscribe token
// (the confined browser login); `axion-push test-push` sends; Firefox decrypts the
// daemon's bytes (its ack says so); the service worker shows the
// notification; a click on it opens its page.
//
// Firefox's push service is the test push service on loopback
// (`dom.push.serverURL`), and the notification is Firefox's own alert
// window (`alerts.useSystemBackend` off), read and clicked from Firefox's
// chrome through WebDriver BiDi (`MOZ_REMOTE_ALLOW_SYSTEM_ACCESS`).

import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { launchFirefox } from './browsers.js';
import { startStack, stopStack } from './stack.js';

const PACKAGE = 'demo';
const USER = 'firefox-user';
const WAIT_MS = 30000;
/** The daemon requires subscribe tokens: browsers log in with one. */
const TOKEN_SECRET = 'a-secret-the-host-app-shares-with-axion-push';

let stack;
let push;
let daemon;
let web;
let browser;
let page;
let openedPage;

before(async () => {
  stack = await startStack(
    'firefox',
    { 'POST /api/push-subscription': relay, 'GET /app/': appPage },
    { tokenSecret: TOKEN_SECRET, receiptClicks: true },
  );
  ({ push, daemon, web } = stack);
  browser = await launchFirefox(push);
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  if (stack) await stopStack(stack);
});

/** What the host app's relay backend was asked, in order. */
const relayed = new EventEmitter();

/**
 * The host app's backend for `relay`: it would check who is signed in;
 * here it trusts the page, and publishes for that user as a service does.
 */
async function relay(body) {
  const request = JSON.parse(body);
  const answer = await relayToDaemon(request);
  relayed.emit('request', request);
  return answer;
}

async function relayToDaemon(request) {
  // The backend mints the token for the user it signed in, as the Python
  // client does.
  const token = await daemon.token(request.package, request.user);
  if (request.action === 'subscribe') {
    if (request.old_endpoint) {
      await daemon.command(request.package, request.user, 'unsubscribe', { endpoint: request.old_endpoint, token });
    }
    const report = await daemon.command(request.package, request.user, 'subscribe', {
      ...request.subscription,
      user_agent: request.user_agent,
      token,
    });
    return report.ok ? { status: 204 } : { status: 422, json: report };
  }
  if (request.action === 'unsubscribe') {
    await daemon.command(request.package, request.user, 'unsubscribe', { endpoint: request.endpoint, token });
    return { status: 204 };
  }
  if (request.action === 'receipt') {
    for (const receipt of request.receipts) {
      await daemon.command(request.package, request.user, 'receipt', receipt);
    }
    return { status: 204 };
  }
  return { status: 400, json: { error: `unknown action ${request.action}` } };
}

/**
 * A page of the app as the host app renders it for its signed-in user
 * (`?user=`): it loads axion-push.js and calls resync(), as every page of
 * the app should on load, and does nothing else. The AxionPush is
 * `window.axionPush`, its resync() `window.resynced`.
 */
async function appPage(_, req) {
  const user = new URL(req.url, 'http://x').searchParams.get('user');
  const options = { package: PACKAGE, user, mqtt: { url: daemon.websocketUrl }, token: await daemon.token(PACKAGE, user) };
  return {
    status: 200,
    html: `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>The app</title>
<script type="importmap">{ "imports": { "mqtt": "/node_modules/mqtt/dist/mqtt.esm.js" } }</script>
<script type="module">
  import { AxionPush } from '/axion-push.js';
  window.axionPush = new AxionPush(${JSON.stringify(options).replace(/</g, '\\u003c')});
  window.resynced = window.axionPush.resync();
</script>
</head>
<body><h1>The app</h1></body>
</html>`,
  };
}

/** The next request the relay has handled that passes `test`. */
function nextRelayed(test, what) {
  return settledLater(new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the relay got no ${what} within ${WAIT_MS / 1000} s`)), WAIT_MS);
    relayed.on('request', function listener(request) {
      if (!test(request)) return;
      clearTimeout(timer);
      relayed.off('request', listener);
      resolve(request);
    });
  }));
}

/**
 * Marks a promise that is awaited later as handled, so that when a test
 * fails before awaiting it, its timeout does not surface as an unhandled
 * rejection in the next test. Awaiting it still throws.
 */
function settledLater(promise) {
  promise.catch(() => {});
  return promise;
}

/** Evaluates `expression` (which may return a promise) in Firefox's chrome; returns its JSON result. */
async function inChrome(expression) {
  const { result: tree } = await browser.connection.send('browsingContext.getTree', { 'moz:scope': 'chrome' });
  const context = tree.contexts[0].context;
  const { result } = await browser.connection.send('script.evaluate', {
    expression: `(async () => JSON.stringify(await (${expression})))()`,
    target: { context },
    awaitPromise: true,
  });
  if (result.type === 'exception') {
    throw new Error(`chrome script failed: ${JSON.stringify(result.exceptionDetails)}`);
  }
  return JSON.parse(result.result.value);
}

/**
 * A chrome-side promise for the first alert window showing `title`: it
 * resolves with what the window shows once one is open.
 */
const ALERT_HELPERS = `{
  read(win) {
    const label = (id) => {
      const el = win.document.getElementById(id);
      return el ? (el.getAttribute('value') || el.textContent || '') : null;
    };
    return { title: label('alertTitleLabel'), body: label('alertTextLabel'), source: label('alertSourceLabel') };
  },
  loaded(win) {
    return win.document.readyState === 'complete' && win.document.documentURI.endsWith('/alert.xhtml');
  },
  find(title) {
    for (const win of Services.wm.getEnumerator('alert:alert')) {
      if (this.loaded(win) && this.read(win).title === title) return win;
    }
    return null;
  },
  titles() {
    return [...Services.wm.getEnumerator('alert:alert')].map((win) => this.read(win).title);
  },
  waitFor(title, ms) {
    return new Promise((resolve, reject) => {
      const seen = [];
      const check = (win) => {
        // alert.js fills the labels on load, before this listener runs.
        win.setTimeout(() => {
          const shown = this.read(win).title;
          seen.push(shown);
          if (shown !== title) return;
          clearTimeout(timer);
          Services.wm.removeListener(listener);
          resolve(win);
        }, 0);
      };
      // A window just opened still shows its initial about:blank, complete
      // already: the alert is there once alert.xhtml has loaded.
      const whenLoaded = (win) => {
        if (this.loaded(win)) check(win);
        else win.addEventListener('load', () => check(win), { once: true });
      };
      const listener = {
        onOpenWindow: (xulWindow) => whenLoaded(xulWindow.docShell.domWindow),
        onCloseWindow() {},
      };
      const timer = setTimeout(() => {
        Services.wm.removeListener(listener);
        reject(new Error('no alert window titled ' + title + ' within ' + ms + ' ms; alert windows seen: '
          + JSON.stringify(seen) + ', open now: ' + JSON.stringify(this.titles())));
      }, ms);
      // Listening first, then looking at the windows already open, so that
      // one opening in between is not missed: one still loading is looked at
      // once it has loaded.
      Services.wm.addListener(listener);
      for (const win of Services.wm.getEnumerator('alert:alert')) whenLoaded(win);
    });
  },
}`;

/**
 * Starts watching for the alert window titled `title` and returns once
 * Firefox's chrome is watching, so that the push that shows it can be sent
 * only then; `shown()` waits for it and resolves with what it shows.
 */
async function watchAlert(title) {
  const key = JSON.stringify(title);
  await inChrome(`(() => {
    const waits = (globalThis.axionPushAlertWaits ??= new Map());
    const shown = (${ALERT_HELPERS}).waitFor(${key}, ${WAIT_MS});
    shown.catch(() => {});
    waits.set(${key}, shown);
    return true;
  })()`);
  const shown = () => inChrome(`(async () => {
    const waits = globalThis.axionPushAlertWaits;
    try {
      return (${ALERT_HELPERS}).read(await waits.get(${key}));
    } finally {
      waits.delete(${key});
    }
  })()`);
  return { shown };
}

/**
 * Clicks the alert window titled `title`. Firefox's own alert window has
 * no buttons (the desktop's notification daemon draws them), so a click on
 * an action is reported to Firefox the way a desktop backend reports it:
 * `alertclickcallback` with the action as the subject.
 */
async function clickAlert(title, action) {
  const script = action
    ? `(() => {
        const win = (${ALERT_HELPERS}).find(${JSON.stringify(title)});
        const subject = { action: ${JSON.stringify(action)}, title: '', iconURL: '', windowsSystemActivationType: false,
          opaqueRelaunchData: '', QueryInterface: ChromeUtils.generateQI(['nsIAlertAction']) };
        win.gAlertListener.observe(subject, 'alertclickcallback', win.gAlertCookie);
        return true;
      })()`
    : `(() => { (${ALERT_HELPERS}).find(${JSON.stringify(title)}).document.getElementById('alertBox').click(); return true; })()`;
  await inChrome(script);
}

/**
 * Dismisses the alert window titled `title` as a person does, with its
 * close button.
 */
async function dismissAlert(title) {
  await inChrome(`(() => { (${ALERT_HELPERS}).find(${JSON.stringify(title)}).document.getElementById('alert-close').doCommand(); return true; })()`);
}

/**
 * The receipts the service worker keeps for `user` (its IndexedDB store,
 * read from Firefox's chrome, so that no page of the app need be open).
 */
function keptReceipts(user) {
  return inChrome(`new Promise((resolve, reject) => {
    const principal = Services.scriptSecurityManager.createContentPrincipalFromOrigin(${JSON.stringify(web.origin)});
    const request = indexedDB.openForPrincipal(principal, 'axion-push');
    request.onerror = () => reject(request.error);
    request.onsuccess = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains('receipts')) {
        db.close();
        resolve([]);
        return;
      }
      const tx = db.transaction('receipts');
      const all = tx.objectStore('receipts').getAll();
      tx.oncomplete = () => {
        db.close();
        resolve(all.result.filter((r) => r.user === ${JSON.stringify(user)}));
      };
      tx.onerror = () => reject(tx.error);
    };
  })`);
}

/** Waits until `check(await read())` is true; resolves with what was read last. */
async function eventually(read, check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (check(value)) return value;
    if (Date.now() > deadline) throw new Error(`${what} within ${ms / 1000} s; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function pageState() {
  return page.$eval('#state', (el) => ({ state: el.dataset.state, text: el.textContent.trim() }));
}

test('the demo page subscribes Firefox through axion-push.js, and the daemon records it', async () => {
  const registered = push.waitFor('register', () => true, 'register from Firefox', WAIT_MS);
  const url = `${web.origin}/demo/?broker=${encodeURIComponent(daemon.websocketUrl)}&package=${PACKAGE}&user=${USER}`;
  await page.goto(url);
  // The page asks before it uses settings a link gave it.
  await page.waitForSelector('#suggested:not([hidden])', { timeout: WAIT_MS });
  await page.click('#use-suggested');
  await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'unsubscribed', {
    timeout: WAIT_MS,
  });
  // What the host app would put into the page for its signed-in user.
  await page.type('#token', await daemon.token(PACKAGE, USER));
  await page.click('#subscribe');
  await page.waitForFunction(
    () => ['subscribed', 'blocked', 'unsupported'].includes(document.querySelector('#state').dataset.state) ||
      !document.querySelector('#problem').hidden,
    { timeout: WAIT_MS },
  );
  const problem = await page.$eval('#problem', (el) => (el.hidden ? null : el.textContent));
  assert.equal(problem, null, `the page reports a problem: ${problem}`);
  const state = await pageState();
  assert.equal(state.state, 'subscribed', state.text);
  assert.match(state.text, /Subscribed as “firefox-user” in “demo”/);
  const { channelID } = await registered;

  const { stdout } = await daemon.run('subscriptions', USER, '--package', PACKAGE, '--json');
  const rows = stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
  assert.equal(rows.length, 1, stdout);
  assert.equal(rows[0].endpoint, `${push.origin}/wpush/${channelID}`);
  assert.equal(rows[0].active, true, stdout);
});

test('a link naming another broker gets nothing from the subscribed browser until the person subscribes there', async () => {
  // A "broker" that only records who connects.
  const elsewhere = net.createServer((socket) => socket.destroy());
  elsewhere.listen(0, '127.0.0.1');
  await once(elsewhere, 'listening');
  let connections = 0;
  const connected = new Promise((resolve) =>
    elsewhere.on('connection', () => {
      connections += 1;
      resolve('connected');
    }),
  );
  const other = await browser.newPage();
  const remembered = await page.evaluate(() => localStorage.getItem('axion-push-demo'));
  try {
    await other.goto(
      `${web.origin}/demo/?broker=ws://127.0.0.1:${elsewhere.address().port}&package=${PACKAGE}&user=mallory`,
    );
    const settled = () =>
      other
        .waitForFunction(
          () => !['checking', 'working'].includes(document.querySelector('#state').dataset.state),
          { timeout: WAIT_MS },
        )
        .then(() => 'settled');
    assert.equal(await Promise.race([connected, settled()]), 'settled', 'the page sent the subscription to the link\'s broker');
    await other.waitForSelector('#suggested:not([hidden])', { timeout: WAIT_MS });
    assert.match(await other.$eval('#suggested', (el) => el.textContent), new RegExp(`ws://127\\.0\\.0\\.1:${elsewhere.address().port}`));
    // Taking the link's settings fills the form; only Subscribe sends.
    await other.click('#use-suggested');
    assert.equal(await Promise.race([connected, settled()]), 'settled', 'choosing the settings sent the subscription');
    assert.equal(await other.$eval('#broker', (el) => el.value), `ws://127.0.0.1:${elsewhere.address().port}`);
    assert.equal(connections, 0);
  } finally {
    await other.evaluate((saved) => localStorage.setItem('axion-push-demo', saved), remembered);
    await other.close();
    elsewhere.close();
  }
});

test('a test-push is decrypted by Firefox, shown by the service worker, and its click opens the page', async () => {
  const title = `Firefox check ${Date.now()}`;
  const body = 'Decrypted by Firefox itself';
  const target = `${web.origin}/demo/?opened-by=notification`;
  const acked = push.waitFor('ack', () => true, 'ack from Firefox', WAIT_MS);
  const alert = settledLater((await watchAlert(title)).shown());

  const { stdout } = await daemon.run(
    'test-push', USER, '--package', PACKAGE, '--title', title, '--body', body, '--url', '/demo/?opened-by=notification',
  );
  assert.match(stdout, /delivered/i, stdout);
  const ack = await acked;
  assert.equal(ack.code, 100, `Firefox acked ${JSON.stringify(ack)}: 101 means it could not decrypt the daemon's bytes`);

  const shown = await alert;
  assert.equal(shown.title, title);
  assert.equal(shown.body, body);
  const notifications = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    return (await registration.getNotifications()).map((n) => ({ title: n.title, body: n.body, data: n.data }));
  });
  const mine = notifications.find((n) => n.title === title);
  assert.ok(mine, `the service worker's notifications: ${JSON.stringify(notifications)}`);
  assert.equal(mine.body, body);
  assert.equal(mine.data.url, target);
  await page.waitForFunction((t) => document.querySelector('#received').textContent.includes(t), { timeout: WAIT_MS }, title);

  const opened = settledLater(browser.waitForTarget((t) => t.url() === target, { timeout: WAIT_MS }));
  await clickAlert(title);
  const tab = await opened;
  assert.equal(tab.url(), target);
  openedPage = await tab.page();
});

test('a click when the page is already open focuses that window instead of opening another', async () => {
  const title = `Again ${Date.now()}`;
  const target = `${web.origin}/demo/?opened-by=notification`;
  assert.equal(openedPage?.url(), target, 'the previous test opened the page');
  await openedPage.evaluate((ms) => {
    window.clicked = new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error('the service worker did not focus this page')), ms);
      navigator.serviceWorker.addEventListener('message', (event) => {
        if (event.data?.type === 'axion-push:notificationclick') resolve(event.data);
      });
    });
  }, WAIT_MS);
  const alert = settledLater((await watchAlert(title)).shown());
  await daemon.run('test-push', USER, '--package', PACKAGE, '--title', title, '--url', '/demo/?opened-by=notification');
  await alert;
  const pagesBefore = (await browser.pages()).length;
  await clickAlert(title);
  const clicked = await openedPage.evaluate(() => window.clicked);
  assert.deepEqual(clicked, { type: 'axion-push:notificationclick', url: target, action: null });
  assert.equal((await browser.pages()).length, pagesBefore, 'a new window was opened');
});

test('a click on an action button opens the action\'s own URL', async () => {
  const title = `Action ${Date.now()}`;
  const actionTarget = `${web.origin}/demo/?action=details`;
  const alert = settledLater((await watchAlert(title)).shown());
  const report = await daemon.command(PACKAGE, USER, 'send', {
    title,
    body: 'with buttons',
    url: '/demo/?opened-by=notification',
    actions: [
      { action: 'details', title: 'Details', url: '/demo/?action=details' },
      { action: 'dismiss', title: 'Dismiss' },
    ],
  });
  assert.equal(report.delivered, 1, JSON.stringify(report));
  await alert;
  const opened = settledLater(browser.waitForTarget((t) => t.url() === actionTarget, { timeout: WAIT_MS }));
  await clickAlert(title, 'details');
  assert.equal((await opened).url(), actionTarget);
});

test('a click on a notification whose URL is another site opens the app\'s start page', async () => {
  const title = `Elsewhere ${Date.now()}`;
  const start = `${web.origin}/`;
  const alert = settledLater((await watchAlert(title)).shown());
  // https anywhere passes the daemon; the service worker opens its own site only.
  const report = await daemon.command(PACKAGE, USER, 'send', { title, url: 'https://elsewhere.example/login' });
  assert.equal(report.delivered, 1, JSON.stringify(report));
  await alert;
  // Whatever page the click opens, once it has a URL.
  const before = new Set(browser.targets());
  const opened = settledLater(
    browser.waitForTarget((t) => t.type() === 'page' && !before.has(t) && t.url() !== 'about:blank', {
      timeout: WAIT_MS,
    }),
  );
  await clickAlert(title);
  const tab = await opened;
  assert.equal(tab.url(), start);
  // Not a page of the demo: closed, so that the service worker hands later
  // subscription changes to the demo page.
  await (await tab.page())?.close();
});

test('test-push --wait-receipts shows that Firefox showed the notification and that it was clicked', async () => {
  const title = `Receipts ${Date.now()}`;
  const alert = settledLater((await watchAlert(title)).shown());
  // Demo pages are open: the service worker hands its receipts to one, which
  // publishes them over its own (confined) connection. The click focuses the
  // demo page already open on the notification's URL.
  const run = settledLater(
    daemon.run(
      'test-push', USER, '--package', PACKAGE, '--title', title, '--url', '/demo/?opened-by=notification',
      '--wait-receipts', '20s',
    ),
  );
  const shown = await alert;
  assert.equal(shown.title, title);
  await clickAlert(title);

  const { stdout, stderr } = await run;
  const receipts = stdout
    .split('\n')
    .filter((line) => line.startsWith('{"'))
    .map((line) => JSON.parse(line))
    .filter((r) => r.command === 'receipt');
  // Firefox also reports the click's closing of the notification as `closed`.
  const kinds = receipts.map((r) => r.receipt);
  assert.ok(kinds.includes('shown') && kinds.includes('clicked'), `test-push printed ${stdout}\n${stderr}`);
  assert.ok(receipts.every((r) => r.ok && r.send_id), JSON.stringify(receipts));
  assert.match(stderr, /shown by subscription/, stderr);
});

async function subscriptions(user = USER) {
  const { stdout } = await daemon.run('subscriptions', user, '--package', PACKAGE, '--json');
  return stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
}

test('when the push service forgets Firefox, the service worker subscribes again and the next push arrives', async () => {
  const [old] = await subscriptions();
  // The service worker asks the focused page to hand the new subscription
  // over; a host app renders the user's token into each of its pages.
  const token = await daemon.token(PACKAGE, USER);
  for (const open of await browser.pages()) {
    if (open.url().includes('/demo/') && open !== page) await open.type('#token', token);
  }
  const registered = push.waitFor('register', () => true, 'a new register from Firefox', WAIT_MS);
  const { report } = await daemon.nextResult(PACKAGE, USER, (r) => r.command === 'subscribe');
  push.dropAllSubscriptions();
  const { channelID } = await registered;
  const resubscribed = await report;
  assert.equal(resubscribed.ok, true, JSON.stringify(resubscribed));

  const rows = await subscriptions();
  const fresh = rows.find((r) => r.endpoint === `${push.origin}/wpush/${channelID}`);
  assert.ok(fresh?.active, `the new subscription is not active: ${JSON.stringify(rows)}`);

  const acked = push.waitFor('ack', (a) => a.channelID === channelID, 'ack on the new subscription', WAIT_MS);
  const { stdout } = await daemon.run('test-push', USER, '--package', PACKAGE, '--title', 'After the change');
  assert.match(stdout, /delivered/i, stdout);
  assert.equal((await acked).code, 100);
  const gone = (await subscriptions()).find((r) => r.endpoint === old.endpoint);
  assert.ok(!gone?.active, `the replaced subscription is still active: ${JSON.stringify(gone)}`);
});

test('unsubscribing on the demo page stops Firefox and deactivates it in the daemon', async () => {
  const unregistered = push.waitFor('unregister', () => true, 'unregister from Firefox', WAIT_MS);
  await page.bringToFront();
  await page.click('#unsubscribe');
  await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'unsubscribed', {
    timeout: WAIT_MS,
  });
  await unregistered;
  const problem = await page.$eval('#problem', (el) => (el.hidden ? null : el.textContent));
  assert.equal(problem, null, `the page reports a problem: ${problem}`);
  const active = (await subscriptions()).filter((r) => r.active);
  assert.deepEqual(active, []);
});

const RELAY_USER = 'relay-user';

test('subscribe() through a relay hands the subscription to the host app\'s backend, and pushes arrive', async () => {
  const key = await daemon.vapidPublicKey();
  const asked = nextRelayed((r) => r.action === 'subscribe', 'subscribe');
  const registered = push.waitFor('register', () => true, 'register from Firefox', WAIT_MS);
  const status = await page.evaluate(
    async (options) => {
      const { AxionPush } = await import('/axion-push.js');
      return new AxionPush(options).subscribe();
    },
    { package: PACKAGE, user: RELAY_USER, relay: '/api/push-subscription', vapidPublicKey: key, module: 'crm' },
  );
  assert.equal(status.state, 'subscribed', JSON.stringify(status));
  const { channelID } = await registered;
  const request = await asked;
  assert.equal(request.package, PACKAGE);
  assert.equal(request.user, RELAY_USER);
  assert.equal(request.module, 'crm');
  assert.equal(request.subscription.endpoint, `${push.origin}/wpush/${channelID}`);
  assert.ok(request.subscription.keys.p256dh && request.subscription.keys.auth, JSON.stringify(request));
  assert.match(request.user_agent, /Firefox/);

  const acked = push.waitFor('ack', (a) => a.channelID === channelID, 'ack', WAIT_MS);
  await daemon.run('test-push', RELAY_USER, '--package', PACKAGE, '--title', 'Through the relay');
  assert.equal((await acked).code, 100);
});

test('with no page open, the service worker hands a replaced subscription to the relay itself', async () => {
  const [old] = (await subscriptions(RELAY_USER)).filter((r) => r.active);
  for (const open of await browser.pages()) await open.goto('about:blank');
  const asked = nextRelayed((r) => r.action === 'subscribe' && r.old_endpoint, 'subscribe from the service worker');
  const registered = push.waitFor('register', () => true, 'a new register from Firefox', WAIT_MS);
  push.dropAllSubscriptions();
  const { channelID } = await registered;
  const request = await asked;
  assert.equal(request.user, RELAY_USER);
  assert.equal(request.old_endpoint, old.endpoint);
  assert.equal(request.subscription.endpoint, `${push.origin}/wpush/${channelID}`);

  const acked = push.waitFor('ack', (a) => a.channelID === channelID, 'ack on the new subscription', WAIT_MS);
  const receipted = nextRelayed((r) => r.action === 'receipt', 'receipts from the service worker');
  await daemon.run('test-push', RELAY_USER, '--package', PACKAGE, '--title', 'Replaced while closed');
  assert.equal((await acked).code, 100);
  // With no page open, the worker hands its receipt to the relay too.
  const { user, receipts } = await receipted;
  assert.equal(user, RELAY_USER);
  assert.ok(receipts.some((r) => r.receipt === 'shown' && r.token), JSON.stringify(receipts));
  const rows = await subscriptions(RELAY_USER);
  assert.deepEqual(
    rows.filter((r) => r.active).map((r) => r.endpoint),
    [`${push.origin}/wpush/${channelID}`],
  );
});

/** Runs `subscribe()` in the page with `options`; resolves with the error's {code, message}. */
function subscribeError(options) {
  return page.evaluate(async (o) => {
    const { AxionPush } = await import('/axion-push.js');
    try {
      await new AxionPush(o).subscribe();
      return null;
    } catch (error) {
      return { name: error.name, code: error.code, message: error.message };
    }
  }, options);
}

test('a broker that cannot be reached is reported in words', async () => {
  await page.goto(`${web.origin}/demo/`);
  const error = await subscribeError({ package: PACKAGE, user: 'nobody', mqtt: { url: 'ws://127.0.0.1:9' } });
  assert.equal(error?.code, 'broker-unreachable', JSON.stringify(error));
  assert.equal(error.name, 'AxionPushError');
  assert.match(error.message, /^Could not reach the notification server at ws:\/\/127\.0\.0\.1:9/);
});

test('a daemon that publishes no VAPID key is reported in words', async () => {
  const error = await subscribeError({
    package: PACKAGE,
    user: 'nobody',
    mqtt: { url: daemon.websocketUrl, topicPrefix: 'no-daemon-here/' },
    token: await daemon.token(PACKAGE, 'nobody'),
    timeout: 1000,
  });
  assert.equal(error?.code, 'no-vapid-key', JSON.stringify(error));
  assert.match(error.message, /did not publish its public key/);
});

test('a subscription the daemon refuses is reported with the daemon\'s reason', async () => {
  const error = await subscribeError({
    package: PACKAGE,
    user: 'nobody',
    module: 'm'.repeat(300),
    mqtt: { url: daemon.websocketUrl },
    token: await daemon.token(PACKAGE, 'nobody'),
  });
  assert.equal(error?.code, 'rejected', JSON.stringify(error));
  assert.match(error.message, /^The notification server refused to subscribe: module is longer than 255 characters/);
});

test('a page whose token the daemon refuses is told so in words', async () => {
  for (const token of [undefined, await daemon.token(PACKAGE, 'someone-else')]) {
    const error = await subscribeError({ package: PACKAGE, user: 'nobody', mqtt: { url: daemon.websocketUrl }, token });
    assert.equal(error?.code, 'login-refused', JSON.stringify(error));
    assert.equal(error.name, 'AxionPushError');
    assert.match(error.message, /did not accept this page’s sign-in: its token is missing, wrong or has expired/);
  }
});

test('the demo page says in words when notifications are blocked for the site', async () => {
  const origin = JSON.stringify(web.origin);
  await inChrome(`(() => {
    const principal = Services.scriptSecurityManager.createContentPrincipalFromOrigin(${origin});
    Services.perms.addFromPrincipal(principal, 'desktop-notification', Services.perms.DENY_ACTION);
    return true;
  })()`);
  try {
    await page.goto(`${web.origin}/demo/`);
    await page.waitForFunction(() => document.querySelector('#state').dataset.state === 'blocked', { timeout: WAIT_MS });
    const state = await pageState();
    assert.match(state.text, /Notifications are blocked for this site\. Allow them in the browser’s site settings/);
    assert.equal(await page.$eval('#subscribe', (b) => b.disabled), true);
  } finally {
    await inChrome(`(() => {
      const principal = Services.scriptSecurityManager.createContentPrincipalFromOrigin(${origin});
      Services.perms.removeFromPrincipal(principal, 'desktop-notification');
      return true;
    })()`);
  }
});

/** Drops whatever push subscription Firefox holds, so the next test starts from none. */
async function dropBrowserSubscription() {
  const channelID = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.getSubscription();
    if (!subscription) return null;
    await subscription.unsubscribe();
    return subscription.endpoint.split('/').pop();
  });
  return channelID;
}

function activeEndpoints(rows) {
  return rows.filter((r) => r.active).map((r) => r.endpoint);
}

/**
 * A shared computer changing hands with tokens on: alice subscribed this
 * Firefox, bob signs in on it and subscribes. The daemon refuses to move
 * alice's endpoint to bob; his page drops that subscription, makes a fresh
 * one and hands it over. Alice's row stays until her push service answers
 * 410 for the dropped endpoint.
 */
async function checkHandOver({ first, second, subscribeAs }) {
  await dropBrowserSubscription();
  await subscribeAs(first);
  const [firstEndpoint] = activeEndpoints(await subscriptions(first));
  assert.ok(firstEndpoint, `${first} has no active subscription`);
  const firstChannel = firstEndpoint.split('/').pop();

  const { report: refusal } = await daemon.nextResult(PACKAGE, second, (r) => r.command === 'subscribe' && !r.ok);
  const dropped = push.waitFor('unregister', (u) => u.channelID === firstChannel, `unregister of ${first}'s subscription`, WAIT_MS);
  const registered = push.waitFor('register', () => true, `a new register for ${second}`, WAIT_MS);
  const status = await subscribeAs(second);
  const refused = await refusal;
  assert.equal(refused.code, 'endpoint-taken', JSON.stringify(refused));
  await dropped;
  const { channelID } = await registered;
  const secondEndpoint = `${push.origin}/wpush/${channelID}`;
  assert.notEqual(secondEndpoint, firstEndpoint);
  assert.equal(status.endpoint, secondEndpoint, JSON.stringify(status));
  assert.deepEqual(activeEndpoints(await subscriptions(second)), [secondEndpoint]);
  assert.deepEqual(activeEndpoints(await subscriptions(first)), [firstEndpoint], `${first}'s row stays until a push finds it gone`);

  const acked = push.waitFor('ack', (a) => a.channelID === channelID, `ack of ${second}'s push`, WAIT_MS);
  const toSecond = await daemon.command(PACKAGE, second, 'send', { title: `For ${second}` });
  assert.equal(toSecond.delivered, 1, JSON.stringify(toSecond));
  assert.equal((await acked).code, 100);

  const toFirst = await daemon.command(PACKAGE, first, 'send', { title: `For ${first}` });
  assert.deepEqual([toFirst.delivered, toFirst.deactivated], [0, 1], JSON.stringify(toFirst));
  assert.ok(
    push.requests.some((r) => r.channelID === firstChannel && r.status === 410),
    `the push service did not answer 410 for ${first}'s old endpoint`,
  );
  assert.deepEqual(activeEndpoints(await subscriptions(first)), []);
  return { firstEndpoint, secondEndpoint };
}

test('over MQTT, a browser alice subscribed is refused to bob, whose page makes a fresh subscription that receives', async () => {
  await page.goto(`${web.origin}/demo/`);
  await page.waitForFunction(() => !['checking', 'working'].includes(document.querySelector('#state').dataset.state), {
    timeout: WAIT_MS,
  });
  // The demo page signs in as `user` with that user's token and subscribes.
  const subscribeAs = async (user) => {
    for (const [field, value] of [['broker', daemon.websocketUrl], ['package', PACKAGE], ['user', user], ['token', await daemon.token(PACKAGE, user)]]) {
      await page.$eval(`#${field}`, (el, v) => {
        el.value = v;
      }, value);
    }
    await page.click('#subscribe');
    await page.waitForFunction(
      () => document.querySelector('#state').dataset.state !== 'working' && !document.querySelector('#subscribe').disabled,
      { timeout: WAIT_MS },
    );
    const problem = await page.$eval('#problem', (el) => (el.hidden ? null : el.textContent));
    assert.equal(problem, null, `the page reports a problem: ${problem}`);
    const state = await pageState();
    assert.equal(state.state, 'subscribed', state.text);
    assert.match(state.text, new RegExp(`Subscribed as “${user}” in “${PACKAGE}”`));
    return page.evaluate(async () => {
      const registration = await navigator.serviceWorker.ready;
      return { endpoint: (await registration.pushManager.getSubscription()).endpoint };
    });
  };
  await checkHandOver({ first: 'alice', second: 'bob', subscribeAs });
});

test('through a relay, a browser carol subscribed is refused to dave, whose page makes a fresh subscription that receives', async () => {
  const key = await daemon.vapidPublicKey();
  const subscribeAs = (user) =>
    page.evaluate(
      async (options) => {
        const { AxionPush } = await import('/axion-push.js');
        return new AxionPush(options).subscribe();
      },
      { package: PACKAGE, user, relay: '/api/push-subscription', vapidPublicKey: key },
    );
  const refusedByRelay = nextRelayed((r) => r.action === 'subscribe' && r.user === 'dave', 'dave\'s first subscribe');
  const { firstEndpoint } = await checkHandOver({ first: 'carol', second: 'dave', subscribeAs });
  assert.equal((await refusedByRelay).subscription.endpoint, firstEndpoint, 'the relay was first given carol\'s endpoint');
});

test('a fresh subscription refused again is reported in words, after one try', async () => {
  const key = await daemon.vapidPublicKey();
  const outcome = await page.evaluate(
    async (options) => {
      const { AxionPush } = await import('/axion-push.js');
      const endpoints = [];
      // A relay function that says every endpoint is another user's.
      const relay = async (request) => {
        if (request.action !== 'subscribe') return;
        endpoints.push(request.subscription.endpoint);
        throw Object.assign(new Error('it is another user’s'), { code: 'endpoint-taken' });
      };
      try {
        await new AxionPush({ ...options, relay }).subscribe();
        return { endpoints };
      } catch (error) {
        return { endpoints, name: error.name, code: error.code, message: error.message };
      }
    },
    { package: PACKAGE, user: 'erin', vapidPublicKey: key },
  );
  assert.equal(outcome.code, 'endpoint-taken', JSON.stringify(outcome));
  assert.equal(outcome.endpoints.length, 2, 'one fresh subscription, not more');
  assert.notEqual(outcome.endpoints[0], outcome.endpoints[1]);
  assert.match(outcome.message, /^This browser was subscribed for another account on this site, so it made a new subscription for you, but the notification server refused that one too/);
});

const APP_USER = 'app-user';

/** The next `receipt` report of `kind` on APP_USER's result topic, once listening. */
async function nextReceipt(kind, ms) {
  const { report } = await daemon.nextResult(PACKAGE, APP_USER, (r) => r.command === 'receipt' && r.receipt === kind, ms);
  return report;
}

test('a notification a person dismisses in Firefox is reported as closed, and the daemon publishes it', async () => {
  // The earlier tests' notifications closed now, not in the middle of the
  // tests below (Firefox closes its alert windows after 20 s, and reports
  // that as closed: a receipt, and with it a hand-over of those kept).
  await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    for (const n of await registration.getNotifications()) n.close();
  });
  await eventually(
    () => inChrome(`(${ALERT_HELPERS}).titles()`),
    (titles) => titles.length === 0,
    'alert windows are still open',
  );
  await dropBrowserSubscription();
  await page.goto(`${web.origin}/app/?user=${APP_USER}`);
  await page.evaluate(() => window.resynced);
  const status = await page.evaluate(() => window.axionPush.subscribe());
  assert.equal(status.state, 'subscribed', JSON.stringify(status));

  const title = `Dismissed ${Date.now()}`;
  const alert = settledLater((await watchAlert(title)).shown());
  // Firefox's alert window also closes by itself after 20 s, which Firefox
  // reports as closed too: this one must come from the person's dismissal.
  const shown = settledLater(nextReceipt('shown'));
  const closed = settledLater(nextReceipt('closed', 15000));
  const sent = await daemon.command(PACKAGE, APP_USER, 'send', { title });
  assert.equal(sent.delivered, 1, JSON.stringify(sent));
  await alert;
  await dismissAlert(title);
  // The page of the app is open: the worker hands both receipts to it,
  // which publishes them over its own connection.
  for (const report of [await shown, await closed]) {
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.equal(report.send_id, sent.id, JSON.stringify(report));
  }
});

test('receipts kept while no page of the app was open are sent when one opens, without subscribing again', async () => {
  // Subscribed (the test before) over MQTT: no relay, so only a page of
  // the app can take the worker's receipts. None is open now.
  for (const open of await browser.pages()) await open.goto('about:blank');
  const title = `While away ${Date.now()}`;
  const alert = settledLater((await watchAlert(title)).shown());
  const sent = await daemon.command(PACKAGE, APP_USER, 'send', { title });
  assert.equal(sent.delivered, 1, JSON.stringify(sent));
  await alert;
  // Dismissed too, so that the alert's own closing after 20 s does not
  // bring a receipt (and with it a hand-over) while the page is open.
  await dismissAlert(title);
  const kept = await eventually(
    () => keptReceipts(APP_USER),
    (receipts) => ['shown', 'closed'].every((kind) => receipts.some((r) => r.receipt === kind)),
    'the service worker kept no shown and closed receipts',
  );
  assert.equal(kept.length, 2, JSON.stringify(kept));

  const shown = settledLater(nextReceipt('shown'));
  const closed = settledLater(nextReceipt('closed'));
  // A page of the app opens and only loads axion-push.js (its resync()).
  await page.goto(`${web.origin}/app/?user=${APP_USER}`);
  const status = await page.evaluate(() => window.resynced);
  assert.equal(status.state, 'subscribed', JSON.stringify(status));
  for (const report of [await shown, await closed]) {
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.equal(report.send_id, sent.id, JSON.stringify(report));
  }
  // Taken, so forgotten.
  await eventually(() => keptReceipts(APP_USER), (receipts) => receipts.length === 0, 'the receipts sent are still kept');
});
