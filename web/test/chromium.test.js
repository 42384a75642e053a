// The service worker in Chromium (headless), the engine of Chrome, Edge,
// Opera and Brave. Chromium's push service is Google's (FCM), unreachable
// from a test, so the push is a simulated browser's: the daemon encrypts
// for keys the test push service holds, the push service decrypts the
// daemon's bytes, and the DevTools protocol's
// `ServiceWorker.deliverPushMessage` hands the plaintext to the real
// service worker, which is what Chromium does after decrypting.
//
// What Chromium does differently, and what these tests pin down: it shows
// at most `Notification.maxActions` (2) buttons, throws on `renotify`
// without a `tag` and on `vibrate` with `silent`, and shows no Declarative
// Web Push by itself (the service worker always runs).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { INSECURE_HOST, launchChromium } from './browsers.js';
import { startStack, stopStack } from './stack.js';

const PACKAGE = 'demo';
const USER = 'chromium-user';
const WAIT_MS = 30000;

let stack;
let push;
let daemon;
let web;
let browser;
let page;
let cdp;
let registrationId;
let simulated;

before(async () => {
  stack = await startStack('chromium');
  ({ push, daemon, web } = stack);
  browser = await launchChromium();
  await browser.defaultBrowserContext().overridePermissions(web.origin, ['notifications']);
  page = await browser.newPage();
  cdp = await page.createCDPSession();
  const registered = new Promise((resolve) => {
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const mine = registrations.find((r) => r.scopeURL === `${web.origin}/` && !r.isDeleted);
      if (mine) resolve(mine.registrationId);
    });
  });
  await cdp.send('ServiceWorker.enable');
  await page.goto(`${web.origin}/demo/`);
  await page.evaluate(async () => {
    await navigator.serviceWorker.register('/service-worker.js');
    await navigator.serviceWorker.ready;
  });
  registrationId = await registered;

  simulated = push.simulatedBrowser();
  const subscribed = await daemon.command(PACKAGE, USER, 'subscribe', simulated.subscription);
  assert.equal(subscribed.ok, true, JSON.stringify(subscribed));
});

after(async () => {
  await browser?.close();
  if (stack) await stopStack(stack);
});

/** Hands `data` to the service worker as a push, and returns the notification it then shows. */
async function deliver(data, tag) {
  await page.evaluate((ms) => {
    // The service worker tells open pages once it has shown a push.
    window.nextPush = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the service worker did not report a push')), ms);
      navigator.serviceWorker.addEventListener('message', function onPush(event) {
        if (event.data?.type !== 'axion-push:push') return;
        clearTimeout(timer);
        navigator.serviceWorker.removeEventListener('message', onPush);
        resolve(event.data);
      });
    });
  }, WAIT_MS);
  await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.ready;
    for (const n of await registration.getNotifications()) n.close();
  });
  await cdp.send('ServiceWorker.deliverPushMessage', { origin: web.origin, registrationId, data });
  return page.evaluate(async (wanted) => {
    await window.nextPush;
    const registration = await navigator.serviceWorker.ready;
    const [n] = await registration.getNotifications(wanted ? { tag: wanted } : undefined);
    if (!n) return null;
    return {
      title: n.title, body: n.body, icon: n.icon, badge: n.badge, image: n.image, tag: n.tag,
      renotify: n.renotify, requireInteraction: n.requireInteraction, silent: n.silent,
      lang: n.lang, dir: n.dir, timestamp: n.timestamp, data: n.data,
      actions: n.actions.map((a) => ({ action: a.action, title: a.title })),
    };
  }, tag);
}

/** Sends through the daemon and returns the plaintext the push service decrypted. */
async function sendThroughDaemon(notification) {
  const decrypted = push.waitFor('decrypted', (d) => d.channelID === simulated.channelID, 'push for Chromium', WAIT_MS);
  const report = await daemon.command(PACKAGE, USER, 'send', notification);
  assert.equal(report.delivered, 1, JSON.stringify(report));
  return (await decrypted).plaintext;
}

test('every field of a daemon notification reaches the notification Chromium shows', async () => {
  const plaintext = await sendThroughDaemon({
    title: 'Build failed',
    body: 'main is red',
    url: '/ci/42',
    icon: '/icon.png',
    badge: '/badge.png',
    image: '/shot.png',
    tag: 'ci',
    renotify: true,
    require_interaction: true,
    silent: false,
    lang: 'en',
    dir: 'ltr',
    actions: [
      { action: 'retry', title: 'Retry', url: '/ci/42/retry' },
      { action: 'logs', title: 'Logs', url: '/ci/42/logs' },
      { action: 'mute', title: 'Mute' },
    ],
    data: { build: 42 },
  });
  const n = await deliver(plaintext, 'ci');
  assert.ok(n, 'the service worker showed no notification');
  assert.equal(n.title, 'Build failed');
  assert.equal(n.body, 'main is red');
  assert.equal(n.icon, `${web.origin}/icon.png`);
  assert.equal(n.badge, `${web.origin}/badge.png`);
  assert.equal(n.image, `${web.origin}/shot.png`);
  assert.equal(n.tag, 'ci');
  assert.equal(n.renotify, true);
  assert.equal(n.requireInteraction, true);
  assert.equal(n.silent, false);
  assert.equal(n.lang, 'en');
  assert.equal(n.dir, 'ltr');
  assert.ok(n.timestamp > 0);
  assert.deepEqual(n.data.data, { build: 42 });
  assert.equal(n.data.url, `${web.origin}/ci/42`);
  assert.deepEqual(n.data.actionUrls, {
    retry: `${web.origin}/ci/42/retry`,
    logs: `${web.origin}/ci/42/logs`,
    mute: `${web.origin}/ci/42`,
  });
  // Chromium shows Notification.maxActions (2) buttons and drops the rest;
  // a click on the third is impossible, the page is still reached by a
  // click on the notification itself.
  assert.equal(await page.evaluate(() => Notification.maxActions), 2);
  assert.deepEqual(n.actions, [
    { action: 'retry', title: 'Retry' },
    { action: 'logs', title: 'Logs' },
  ]);
});

test('a push without a payload still shows a notification', async () => {
  const n = await deliver('');
  assert.ok(n, 'the service worker showed no notification');
  assert.equal(n.title, 'New notification');
  assert.equal(n.body, 'Open the app to see what is new.');
  assert.equal(n.data.url, `${web.origin}/`);
});

test('a plain-text payload is shown as the body', async () => {
  const n = await deliver('Backup finished');
  assert.equal(n.title, 'New notification');
  assert.equal(n.body, 'Backup finished');
});

test('the payload older senders used ({title, body, url}) is shown', async () => {
  const n = await deliver(JSON.stringify({ title: 'Legacy', body: 'from the Python module', url: '/old' }));
  assert.equal(n.title, 'Legacy');
  assert.equal(n.body, 'from the Python module');
  assert.equal(n.data.url, `${web.origin}/old`);
});

test('a push with a title and no body shows no filler text', async () => {
  const n = await deliver(JSON.stringify({ title: 'Backup finished' }));
  assert.equal(n.title, 'Backup finished');
  assert.equal(n.body, '');
});

test('a notification Chromium refuses to show is reported as a failed receipt, with its reason', async () => {
  // This page stands in for a page of the app: the worker hands receipts to it.
  await page.evaluate(async (settings) => {
    const registration = await navigator.serviceWorker.ready;
    await new Promise((resolve) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = resolve;
      registration.active.postMessage({ type: 'axion-push:settings', settings }, [channel.port2]);
    });
  }, { package: PACKAGE, user: USER });
  // Every hand-over is taken, until one brings a failed receipt.
  await page.evaluate((ms) => {
    window.nextReceipts = new Promise((resolve, reject) => {
      const taken = [];
      const timer = setTimeout(() => reject(new Error(`no failed receipt; handed over: ${JSON.stringify(taken)}`)), ms);
      navigator.serviceWorker.addEventListener('message', function onReceipts(event) {
        if (event.data?.type !== 'axion-push:receipts') return;
        event.ports[0].postMessage({ ok: true });
        taken.push(...event.data.receipts);
        if (!taken.some((r) => r.receipt === 'failed')) return;
        clearTimeout(timer);
        navigator.serviceWorker.removeEventListener('message', onReceipts);
        resolve(taken);
      });
    });
  }, WAIT_MS);
  const plaintext = await sendThroughDaemon({ title: 'Not allowed' });
  // The person has since blocked notifications for the site.
  await browser.defaultBrowserContext().overridePermissions(web.origin, []);
  try {
    await cdp.send('ServiceWorker.deliverPushMessage', { origin: web.origin, registrationId, data: plaintext });
    // Before it, or with it, come the receipts the worker kept while no
    // page took them (the pushes of the tests before): the failed one is
    // the last.
    const receipts = await page.evaluate(() => window.nextReceipts);
    const failed = receipts.at(-1);
    assert.equal(failed.receipt, 'failed', JSON.stringify(receipts));
    assert.match(failed.reason, /permission/i, failed.reason);
    assert.ok(receipts.slice(0, -1).every((r) => r.receipt === 'shown'), JSON.stringify(receipts));

    const report = await daemon.command(PACKAGE, USER, 'receipt', failed);
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.equal(report.receipt, 'failed');
    assert.equal(report.reason, failed.reason);
  } finally {
    await browser.defaultBrowserContext().overridePermissions(web.origin, ['notifications']);
  }
});

test('the service worker keeps the newest 100 receipts it could not send, dropping the oldest', async () => {
  const worker = await (
    await browser.waitForTarget((t) => t.type() === 'service_worker' && t.url() === `${web.origin}/service-worker.js`, {
      timeout: WAIT_MS,
    })
  ).worker();
  /** The tokens of the receipts the worker keeps, oldest first. */
  const keptTokens = () => worker.evaluate(async () => (await keptReceipts()).values.map((r) => r.token));
  // 103 receipts no page took, kept one at a time as the worker keeps
  // each (its own keep(), not 103 pushes): the first 3 are gone already.
  await worker.evaluate(async (pkg) => {
    for (let i = 0; i < 103; i += 1) {
      await keep([{ token: `kept-${i}`, receipt: 'shown', package: pkg, user: 'away' }]);
    }
  }, PACKAGE);
  const full = Array.from({ length: 100 }, (_, i) => `kept-${i + 3}`);
  assert.deepEqual(await keptTokens(), full);

  // One more, from a push whose receipt nothing takes (this page has no
  // AxionPush for the worker's user): it pushes out the oldest.
  const newest = 'newest-receipt-token';
  await deliver(JSON.stringify({ title: 'One more', receipt: { token: newest, clicks: false } }));
  const deadline = Date.now() + WAIT_MS;
  let kept = await keptTokens();
  while (!kept.includes(newest) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    kept = await keptTokens();
  }
  assert.deepEqual(kept, [...full.slice(1), newest]);
});

test('renotify without a tag, which Chromium refuses, does not lose the notification', async () => {
  const n = await deliver(
    JSON.stringify({ web_push: 8030, notification: { title: 'No tag', body: 'renotify alone', navigate: '/', renotify: true } }),
  );
  assert.ok(n, 'the service worker showed no notification');
  assert.equal(n.title, 'No tag');
  assert.equal(n.renotify, false);
});

test('a silent notification with a vibration pattern, which Chromium refuses, is shown silent', async () => {
  const n = await deliver(
    JSON.stringify({ web_push: 8030, notification: { title: 'Quiet', navigate: '/', silent: true, vibrate: [100, 50, 100] } }),
  );
  assert.ok(n, 'the service worker showed no notification');
  assert.equal(n.title, 'Quiet');
  assert.equal(n.silent, true);
});

test('a push service that never answers Chromium\'s subscribe is reported as unreachable, not waited for', async () => {
  const stalled = await browser.newPage();
  try {
    // What Chromium does when its push service (FCM) is out of reach: the
    // subscribe() promise never settles.
    await stalled.evaluateOnNewDocument(() => {
      PushManager.prototype.getSubscription = async () => null;
      PushManager.prototype.subscribe = () => new Promise(() => {});
    });
    await stalled.goto(`${web.origin}/demo/`);
    const outcome = await stalled.evaluate(
      async (key, guardMs) => {
        const { AxionPush } = await import('/axion-push.js');
        const push = new AxionPush({
          package: 'demo',
          user: 'stalled',
          vapidPublicKey: key,
          relay: async () => {},
          pushServiceTimeout: 500,
        });
        const guard = new Promise((resolve) => setTimeout(() => resolve({ code: 'still waiting' }), guardMs));
        const subscribing = push.subscribe().then(
          () => ({ code: 'subscribed' }),
          (error) => ({ code: error.code, message: error.message }),
        );
        return Promise.race([subscribing, guard]);
      },
      simulated.subscription.keys.p256dh,
      WAIT_MS / 3,
    );
    assert.equal(outcome.code, 'push-service-unreachable', JSON.stringify(outcome));
    assert.match(outcome.message, /^The browser’s push service did not answer within 1 s/);
  } finally {
    await stalled.close();
  }
});

/**
 * Clicks the notification tagged `tag` (on `action`, if given) the way
 * Chromium does, by firing `notificationclick` in the real service worker
 * with the notification it showed, and returns the URL the worker asks to
 * open. Headless Chromium has no notification to click and allows
 * `clients.openWindow` only during a real click, so the worker's
 * `openWindow` is replaced for that one click by one that reports its URL.
 */
async function clickInWorker(tag, action = '') {
  const target = await browser.waitForTarget(
    (t) => t.type() === 'service_worker' && t.url() === `${web.origin}/service-worker.js`,
    { timeout: WAIT_MS },
  );
  const worker = await target.worker();
  return worker.evaluate(async (wanted, chosen, ms) => {
    const [notification] = await self.registration.getNotifications({ tag: wanted });
    if (!notification) throw new Error(`no notification tagged ${wanted}`);
    const opened = new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error('the click opened nothing')), ms);
      self.clients.openWindow = async (url) => resolve(url);
    });
    try {
      // The handler asks for the window before its event.waitUntil, which
      // may throw on an event made by script.
      self.dispatchEvent(new NotificationEvent('notificationclick', { notification, action: chosen }));
      return await opened;
    } finally {
      delete self.clients.openWindow;
    }
  }, tag, action, WAIT_MS);
}

test('a click opens only pages of the app: other sites, javascript: and data: URLs open its start page', async () => {
  const start = `${web.origin}/`;
  const phish = JSON.stringify({
    web_push: 8030,
    notification: {
      title: 'Phish',
      tag: 'phish',
      navigate: 'https://evil.example/login',
      actions: [
        { action: 'js', title: 'Run', navigate: 'javascript:alert(document.cookie)' },
        { action: 'data', title: 'Show', url: 'data:text/html,<script>alert(1)</script>' },
        { action: 'own', title: 'Own', url: '/inbox' },
      ],
    },
  });
  const n = await deliver(phish, 'phish');
  assert.ok(n, 'the service worker showed no notification');
  assert.equal(n.data.url, start);
  assert.deepEqual(n.data.actionUrls, { js: start, data: start, own: `${web.origin}/inbox` });
  // A click closes the notification: each click gets one of its own.
  assert.equal(await clickInWorker('phish'), start);
  await deliver(phish, 'phish');
  assert.equal(await clickInWorker('phish', 'js'), start);
  await deliver(phish, 'phish');
  assert.equal(await clickInWorker('phish', 'own'), `${web.origin}/inbox`);

  // The payload older senders used, and a scheme-relative URL.
  for (const url of ['javascript:alert(1)', '//evil.example/x', 'data:text/html,x']) {
    const old = await deliver(JSON.stringify({ title: 'Old', tag: 'old', url }), 'old');
    assert.equal(old.data.url, start, url);
    assert.equal(await clickInWorker('old'), start, url);
  }
  // Pages of the app still open as they are.
  const own = await deliver(JSON.stringify({ title: 'Own', tag: 'own', url: '/ci/42?x=1#log' }), 'own');
  assert.equal(await clickInWorker('own'), `${web.origin}/ci/42?x=1#log`);
});

test('a notification shown with an unchecked URL still opens only the start page', async () => {
  // As an earlier version of the worker stored it.
  const showStale = () =>
    page.evaluate(async () => {
      const registration = await navigator.serviceWorker.ready;
      await registration.showNotification('Stale', {
        tag: 'stale',
        data: { url: 'javascript:alert(1)', actionUrls: { go: 'https://evil.example/' } },
      });
    });
  await showStale();
  assert.equal(await clickInWorker('stale'), `${web.origin}/`);
  await showStale();
  assert.equal(await clickInWorker('stale', 'go'), `${web.origin}/`);
});

/** Registers the service worker from `scriptUrl` and waits until it controls the page. */
async function registerWorker(scriptUrl) {
  await page.evaluate(async (url) => {
    const registration = await navigator.serviceWorker.register(url);
    const incoming = registration.installing || registration.waiting;
    if (incoming) {
      await new Promise((resolve) => {
        incoming.addEventListener('statechange', () => incoming.state === 'activated' && resolve());
      });
    }
  }, scriptUrl);
}

test('origins the page allowed when it registered the worker open too, no others', async () => {
  await registerWorker('/service-worker.js?allow-origin=https%3A%2F%2Fhelp.example.com&allow-origin=javascript%3Ax');
  try {
    const allowed = await deliver(JSON.stringify({ title: 'Help', tag: 'help', url: 'https://help.example.com/a?b=1' }), 'help');
    assert.equal(allowed.data.url, 'https://help.example.com/a?b=1');
    const other = await deliver(JSON.stringify({ title: 'Other', tag: 'other', url: 'https://evil.example/' }), 'other');
    assert.equal(other.data.url, `${web.origin}/`);
    const plain = await deliver(JSON.stringify({ title: 'Plain', tag: 'plain', url: 'http://help.example.com/' }), 'plain');
    assert.equal(plain.data.url, `${web.origin}/`);
  } finally {
    await registerWorker('/service-worker.js');
  }
});

test('on a page that is not served securely, the demo page says notifications need HTTPS', async () => {
  const insecure = await browser.newPage();
  try {
    await insecure.goto(`http://${INSECURE_HOST}:${new URL(web.origin).port}/demo/`);
    await insecure.waitForFunction(() => document.querySelector('#state').dataset.state === 'unsupported', {
      timeout: WAIT_MS,
    });
    const text = await insecure.$eval('#state-text', (el) => el.textContent);
    assert.equal(text, 'This page is not served over HTTPS, and browsers only allow notifications on secure pages.');
    assert.equal(await insecure.$eval('#subscribe', (b) => b.disabled), true);
  } finally {
    await insecure.close();
  }
});

test('the demo page quotes what a link puts in the command to copy, after asking', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'axion-push-quoting-'));
  const pwned = join(dir, 'pwned');
  const demo = await browser.newPage();
  try {
    const hostile = `demo;touch ${pwned};#`;
    await demo.goto(`${web.origin}/demo/?package=${encodeURIComponent(hostile)}&user=${encodeURIComponent("o'brien $(id)")}`);
    await demo.waitForSelector('#suggested:not([hidden])', { timeout: WAIT_MS });
    // Nothing from the link is used before the person says so.
    assert.equal(await demo.$eval('#package', (el) => el.value), 'demo');
    assert.equal(await demo.$eval('#command', (el) => el.textContent), 'axion-push test-push me --package demo');
    await demo.click('#use-suggested');
    assert.equal(await demo.$eval('#suggested', (el) => el.hidden), true);
    const command = await demo.$eval('#command', (el) => el.textContent);
    // What a shell makes of the copied command, with an `axion-push` that
    // prints its arguments: the same words, and nothing else run.
    mkdirSync(join(dir, 'bin'));
    writeFileSync(join(dir, 'bin', 'axion-push'), '#!/bin/sh\nprintf "%s\\n" "$@"\n', { mode: 0o755 });
    const words = execFileSync('sh', ['-c', command], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` },
    });
    assert.deepEqual(words.split('\n').slice(0, -1), ['test-push', "o'brien $(id)", '--package', hostile], command);
    assert.equal(existsSync(pwned), false, `the command ran what the link put in it: ${command}`);
  } finally {
    await demo.evaluate(() => localStorage.removeItem('axion-push-demo'));
    await demo.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** axe-core's findings on `target` (a puppeteer Page) at the WCAG 2.1 AA rules. */
async function accessibilityViolations(target) {
  const axe = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  await target.evaluate(axe);
  return target.evaluate(async () => {
    const { violations } = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
  });
}

test('the demo page has no accessibility violations, subscribed or showing a problem', async () => {
  const demo = await browser.newPage();
  try {
    for (const scheme of ['light', 'dark']) {
      await demo.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: scheme }]);
      await demo.goto(`${web.origin}/demo/?broker=ws://127.0.0.1:9`);
      await demo.waitForFunction(() => document.querySelector('#state').dataset.state !== 'checking', {
        timeout: WAIT_MS,
      });
      await demo.waitForSelector('#suggested:not([hidden])', { timeout: WAIT_MS });
      assert.deepEqual(await accessibilityViolations(demo), [], `${scheme} scheme, asking about the link's settings`);
      await demo.click('#use-suggested');
      assert.deepEqual(await accessibilityViolations(demo), [], `${scheme} scheme`);
      // A problem on show: nothing listens on the broker's port.
      await demo.click('#subscribe');
      await demo.waitForFunction(() => !document.querySelector('#problem').hidden, { timeout: WAIT_MS });
      assert.match(await demo.$eval('#problem', (el) => el.textContent), /^Could not reach the notification server/);
      assert.deepEqual(await accessibilityViolations(demo), [], `${scheme} scheme, with a problem shown`);
      await demo.evaluate(() => localStorage.removeItem('axion-push-demo'));
    }
  } finally {
    await demo.close();
  }
});
