// axion-push service worker: shows the notifications axion-push sends, opens
// (or focuses) their page when clicked, and keeps the subscription alive when
// the browser replaces it.
//
// Serve it from the root of your site (or give it a Service-Worker-Allowed
// header) so that its scope covers the pages a notification opens.
//
// A click opens pages of this site only: a notification's URL on another
// origin, or one that is not a web page at all (javascript:, data:…), opens
// the app's start page (this worker's scope) instead. Other origins a click
// may open are listed by the page when it registers this worker, as
// `allow-origin` parameters of the script's URL — a push cannot add one:
//   navigator.serviceWorker.register(
//     '/service-worker.js?allow-origin=https://help.example.com')
// (with axion-push.js: the `serviceWorker` option).
//
// Receipts: a push from axion-push carries a receipt token; this worker
// sends it back with what became of the notification — `shown`, or `failed`
// with the browser's reason, and, where the operator turned click receipts
// on, `clicked` (with the action) and `closed`. They go to the relay when
// the page configured one, else through an open page of the app, else they
// wait here (IndexedDB, at most MAX_KEPT_RECEIPTS) for the next chance: the
// next receipt, or a page of the app opening (axion-push.js's resync() and
// subscribe() tell this worker).
//
// What a push may carry:
// - a Declarative Web Push message, {"web_push": 8030, "notification": {...}},
//   which is what axion-push sends (with "mutable": true, so browsers that
//   could show it by themselves still let this worker show it);
// - a plain {"title", "body", "url", ...} object, as older senders sent;
// - text, or nothing at all. A push always shows a notification: browsers
//   penalise, and eventually unsubscribe, pushes that show nothing.

'use strict';

const FALLBACK_TITLE = 'New notification';
const FALLBACK_BODY = 'Open the app to see what is new.';
const SETTINGS_DB = 'axion-push';
const SETTINGS_STORE = 'settings';
const SETTINGS_KEY = 'subscription';
const RECEIPTS_STORE = 'receipts';
// Receipts kept while nothing can take them; the oldest go first.
const MAX_KEPT_RECEIPTS = 100;
// Receipts handed over at once.
const HAND_OVER_BATCH = 8;

// The origins a click may open: this site's, and https origins the page
// listed when it registered this worker.
const OPEN_ORIGINS = new Set([
  self.location.origin,
  ...new URL(self.location.href).searchParams
    .getAll('allow-origin')
    .map(httpsOrigin)
    .filter(Boolean),
]);

function httpsOrigin(text) {
  try {
    const url = new URL(text);
    return url.protocol === 'https:' ? url.origin : null;
  } catch (_) {
    return null;
  }
}

self.addEventListener('install', () => {
  // A new version of this file takes over at once: it only handles events.
  self.skipWaiting();
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

// ---- push ---------------------------------------------------------------

/** Reads a push message into {title, options}, whatever shape it has. */
function readPush(data) {
  let message = null;
  if (data) {
    try {
      message = data.json();
    } catch (_) {
      const text = data.text().trim();
      message = text ? { body: text } : null;
    }
  }
  if (message === null || typeof message !== 'object' || Array.isArray(message)) {
    message = {};
  }
  const declarative = message.web_push === 8030 && message.notification;
  const n = declarative && typeof message.notification === 'object' ? message.notification : message;
  const shown = notificationFrom(n);
  const receipt = receiptFrom(message.receipt);
  if (receipt) shown.options.data.receipt = receipt;
  return shown;
}

/** The receipt token a push carried, if it is one. */
function receiptFrom(r) {
  if (!r || typeof r !== 'object' || typeof r.token !== 'string' || !/^[A-Za-z0-9_-]{1,1024}$/.test(r.token)) {
    return null;
  }
  return { token: r.token, clicks: r.clicks === true };
}

function text(value) {
  return typeof value === 'string' && value.trim() !== '' ? value : undefined;
}

function notificationFrom(n) {
  const url = openable(text(n.navigate) || text(n.url));
  const actions = Array.isArray(n.actions) ? n.actions.filter((a) => a && text(a.action) && text(a.title)) : [];
  const actionUrls = {};
  for (const a of actions) {
    const own = text(a.navigate) || text(a.url);
    actionUrls[a.action] = own ? openable(own, url) : url;
  }
  const tag = text(n.tag);
  const silent = n.silent === true;
  const options = {
    // The generic body only stands in for a push that says nothing at all.
    body: typeof n.body === 'string' ? n.body : text(n.title) ? '' : FALLBACK_BODY,
    icon: text(n.icon),
    badge: text(n.badge),
    image: text(n.image),
    tag,
    // Browsers throw on renotify without a tag, and on a vibration
    // pattern for a silent notification.
    renotify: Boolean(n.renotify === true && tag),
    requireInteraction: n.requireInteraction === true || n.require_interaction === true,
    silent,
    vibrate: !silent && Array.isArray(n.vibrate) ? n.vibrate : undefined,
    lang: text(n.lang),
    dir: ['ltr', 'rtl', 'auto'].includes(n.dir) ? n.dir : 'auto',
    timestamp: Number.isFinite(n.timestamp) ? n.timestamp : undefined,
    actions: actions.map((a) => ({ action: a.action, title: a.title, icon: text(a.icon) })),
    data: { url, actionUrls, data: n.data === undefined ? null : n.data },
  };
  for (const key of Object.keys(options)) {
    if (options[key] === undefined) delete options[key];
  }
  return { title: text(n.title) || FALLBACK_TITLE, options };
}

/**
 * `url` resolved against `base` (default: the app's start page, this
 * worker's scope) when it is a web page of an origin a click may open;
 * otherwise the start page.
 */
function openable(url, base) {
  const start = self.registration.scope;
  try {
    const target = new URL(url || start, base || start);
    if (['https:', 'http:'].includes(target.protocol) && OPEN_ORIGINS.has(target.origin)) return target.href;
  } catch (_) {
    // Not a URL: the start page.
  }
  return start;
}

async function showPush(event) {
  let shown;
  try {
    shown = readPush(event.data);
  } catch (_) {
    shown = { title: FALLBACK_TITLE, options: { body: FALLBACK_BODY, data: { url: self.registration.scope } } };
  }
  const receipt = shown.options.data && shown.options.data.receipt;
  try {
    await self.registration.showNotification(shown.title, shown.options);
  } catch (error) {
    // An option this browser refuses (an icon URL it cannot parse, too many
    // actions…) must not swallow the notification: show the words alone.
    try {
      await self.registration.showNotification(shown.title, {
        body: shown.options.body,
        tag: shown.options.tag,
        data: shown.options.data,
      });
    } catch (refused) {
      if (receipt) await report(receipt, 'failed', { reason: describe(refused) });
      throw refused;
    }
  }
  // Open pages of the app may want to know (the demo page shows it).
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  for (const client of windows) {
    client.postMessage({ type: 'axion-push:push', title: shown.title, body: shown.options.body, url: shown.options.data.url });
  }
  if (receipt) await report(receipt, 'shown');
}

self.addEventListener('push', (event) => {
  event.waitUntil(showPush(event));
});

// ---- click ----------------------------------------------------------------

async function openOrFocus(target, action) {
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => client.url === target);
  if (open && 'focus' in open) {
    const focused = await open.focus();
    // The page was already open: tell it why it came to the front (it may
    // want to refresh what the notification was about).
    focused.postMessage({ type: 'axion-push:notificationclick', url: target, action: action || null });
    return focused;
  }
  return self.clients.openWindow(target);
}

self.addEventListener('notificationclick', (event) => {
  const data = event.notification.data || {};
  const target = (event.action && data.actionUrls && data.actionUrls[event.action]) || data.url;
  event.notification.close();
  // Checked again: a notification shown by an earlier version of this
  // worker carries its URLs unchecked.
  const opened = openOrFocus(openable(target), event.action);
  const receipt = data.receipt && data.receipt.clicks ? data.receipt : null;
  event.waitUntil(
    Promise.all([opened, receipt ? report(receipt, 'clicked', event.action ? { action: event.action } : {}) : null]),
  );
});

self.addEventListener('notificationclose', (event) => {
  const data = event.notification.data || {};
  if (data.receipt && data.receipt.clicks) event.waitUntil(report(data.receipt, 'closed'));
});

// ---- subscription changes -------------------------------------------------

// What axion-push.js recorded at subscribe time, so this worker can
// resubscribe on its own: the VAPID key, and how to hand a new subscription
// over (a relay URL of the host app's backend, or the page's own channel).
function settingsDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(SETTINGS_DB, 2);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(SETTINGS_STORE)) db.createObjectStore(SETTINGS_STORE);
      if (!db.objectStoreNames.contains(RECEIPTS_STORE)) db.createObjectStore(RECEIPTS_STORE, { autoIncrement: true });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function settings(value) {
  const db = await settingsDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(SETTINGS_STORE, value === undefined ? 'readonly' : 'readwrite');
      const store = tx.objectStore(SETTINGS_STORE);
      const request =
        value === undefined
          ? store.get(SETTINGS_KEY)
          : value === null
            ? store.delete(SETTINGS_KEY)
            : store.put(value, SETTINGS_KEY);
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

self.addEventListener('message', (event) => {
  const message = event.data || {};
  if (message.type === 'axion-push:settings') {
    const done = settings(message.settings || null).then(
      () => event.ports[0] && event.ports[0].postMessage({ ok: true }),
      (error) => event.ports[0] && event.ports[0].postMessage({ ok: false, error: String(error) }),
    );
    // A page with a channel to the daemon is here: receipts kept while
    // there was none can go now.
    event.waitUntil(done.then(() => flushReceipts()).catch(() => {}));
  } else if (message.type === 'axion-push:ready') {
    // A page of the app opened on a subscribed browser (axion-push.js's
    // resync() on page load): the chance receipts kept while no page was
    // open were waiting for.
    event.waitUntil(flushReceipts().catch(() => {}));
  }
});

function base64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

async function resubscribe(event) {
  const saved = await settings();
  let subscription = event.newSubscription;
  if (!subscription) {
    const key = (event.oldSubscription && event.oldSubscription.options.applicationServerKey) ||
      (saved && saved.applicationServerKey);
    if (!key) return;
    subscription = await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  }
  const change = {
    type: 'axion-push:subscriptionchange',
    package: saved ? saved.package : null,
    user: saved ? saved.user : null,
    subscription: subscription.toJSON(),
    oldEndpoint: event.oldSubscription ? event.oldSubscription.endpoint : (saved && saved.endpoint) || null,
    applicationServerKey: base64url(subscription.options.applicationServerKey),
  };
  if (saved && saved.relayUrl) {
    const response = await fetch(saved.relayUrl, {
      method: 'POST',
      credentials: 'include',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        action: 'subscribe',
        package: saved.package,
        user: saved.user,
        module: saved.module || undefined,
        subscription: change.subscription,
        old_endpoint: change.oldEndpoint,
      }),
    });
    if (!response.ok) throw new Error(`the relay answered ${response.status}`);
    await settings({ ...saved, endpoint: subscription.endpoint });
    return;
  }
  // The page's channel (MQTT, or a callback of the host app) lives in the
  // page: hand the new subscription to one open page of the app, the
  // focused one if any (several would race each other's unsubscribe of the
  // old endpoint). With none open, AxionPush.resync() sends it on the next
  // visit.
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const chosen = windows.find((client) => client.focused) || windows[0];
  if (chosen) chosen.postMessage(change);
}

self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(resubscribe(event));
});

// ---- receipts ---------------------------------------------------------------

function describe(error) {
  const text = error && (error.message || String(error));
  return (error && error.name ? `${error.name}: ${text}` : text || 'unknown').slice(0, 256);
}

/** The receipts kept, and their keys, oldest first. */
async function keptReceipts() {
  const db = await settingsDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(RECEIPTS_STORE, 'readonly');
      const store = tx.objectStore(RECEIPTS_STORE);
      const values = store.getAll();
      const keys = store.getAllKeys();
      tx.oncomplete = () => resolve({ values: values.result, keys: keys.result });
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

async function changeKept(change) {
  const db = await settingsDb();
  try {
    await new Promise((resolve, reject) => {
      const tx = db.transaction(RECEIPTS_STORE, 'readwrite');
      change(tx.objectStore(RECEIPTS_STORE));
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Keeps `receipts` for later, dropping the oldest beyond the bound. */
async function keep(receipts) {
  const kept = await keptReceipts();
  const excess = kept.keys.length + receipts.length - MAX_KEPT_RECEIPTS;
  await changeKept((store) => {
    for (const key of kept.keys.slice(0, Math.max(0, excess))) store.delete(key);
    for (const r of receipts.slice(Math.max(0, receipts.length - MAX_KEPT_RECEIPTS))) store.add(r);
  });
}

/**
 * Hands `receipts` of the user `saved` names to the daemon's channel: the
 * relay, or an open page of the app (which publishes them over its own
 * connection). Resolves true when one took them.
 */
async function handOver(saved, receipts) {
  if (saved.relayUrl) {
    try {
      const response = await fetch(saved.relayUrl, {
        method: 'POST',
        credentials: 'include',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ action: 'receipt', package: saved.package, user: saved.user, receipts }),
      });
      return response.ok;
    } catch (_) {
      return false;
    }
  }
  // The focused page first, then those in view (a background tab's timers
  // are slowed down); a page that cannot send them (signed in as someone
  // else, its token expired) says so, and the next one is asked.
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const rank = (client) => 2 * Number(client.focused) + Number(client.visibilityState === 'visible');
  windows.sort((a, b) => rank(b) - rank(a));
  for (const client of windows) {
    if (await askPage(client, { type: 'axion-push:receipts', package: saved.package, user: saved.user, receipts })) {
      return true;
    }
  }
  return false;
}

/** Hands `message` to one page; true when it answers that it sent them. */
function askPage(client, message) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    // A page without axion-push.js never answers; one with it answers once
    // its batch of 8 is published: within a second when it is in view,
    // several in a background tab, whose timers the browser slows down.
    const timer = setTimeout(() => resolve(false), 20000);
    channel.port1.onmessage = (event) => {
      clearTimeout(timer);
      resolve(Boolean(event.data && event.data.ok));
    };
    client.postMessage(message, [channel.port2]);
  });
}

/**
 * Records one receipt, then sends it with any kept before it. Each is kept
 * under the user this browser was subscribed for when it came: a receipt
 * is taken only on its own user's topic, so it waits for that user.
 */
async function report(receipt, what, extra) {
  try {
    const saved = (await settings()) || {};
    await keep([
      { token: receipt.token, receipt: what, ...(extra || {}), package: saved.package || null, user: saved.user || null },
    ]);
    await flushReceipts();
  } catch (_) {
    // A receipt is worth less than the notification: never fail its event.
  }
}

// One hand-over at a time per user: two at once would both send what is
// kept. (Per user, so that a page that does not answer for one user holds
// up nobody else's receipts.)
const flushing = new Map();

/** Sends the kept receipts of the user this browser is subscribed for. */
async function flushReceipts() {
  const saved = await settings();
  if (!saved || !saved.package || !saved.user) return;
  const key = JSON.stringify([saved.package, saved.user, saved.relayUrl || null]);
  const next = (flushing.get(key) || Promise.resolve()).then(flushNow, flushNow);
  flushing.set(key, next);
  try {
    await next;
  } finally {
    if (flushing.get(key) === next) flushing.delete(key);
  }
}

async function flushNow() {
  const saved = await settings();
  if (!saved || !saved.package || !saved.user) return;
  const kept = await keptReceipts();
  const mine = kept.keys
    .map((key, i) => [key, kept.values[i]])
    .filter(([, r]) => r.package === saved.package && r.user === saved.user);
  if (!mine.length) return;
  // A few at a time, each batch forgotten once taken: a page publishes 8
  // over one connection, well within the wait for its answer.
  for (let i = 0; i < mine.length; i += HAND_OVER_BATCH) {
    const batch = mine.slice(i, i + HAND_OVER_BATCH);
    const receipts = batch.map(([, { package: _package, user: _user, ...r }]) => r);
    if (!(await handOver(saved, receipts))) return;
    await changeKept((store) => batch.forEach(([key]) => store.delete(key)));
  }
}
