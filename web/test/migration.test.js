// An Axion installation moving from the Python ObjNotifyPush module to the
// daemon, with a real browser that subscribed before the move:
// - before: Firefox subscribed with the VAPID key of config.yaml's
//   `base.push` (a PEM key py_vapid's `vapid --gen` wrote), and the Python
//   module recorded it in Axion's table on MariaDB as it did — the table
//   created by Axion's DDL beside other installations' rows, `Active` 'Y',
//   CHAR columns, NULL `Module` and `CreatedAt`;
// - the move: the daemon starts on that database with that config.yaml;
// - after: a push reaches Firefox at once, signed with the same key (the
//   test push service refuses a key the browser did not subscribe with),
//   and the page, still calling the old global axion_push_subscribe(),
//   keeps the browser's subscription: no new endpoint, no second row.
//
// Needs MariaDB (AXION_PUSH_TEST_MARIADB, default the machine's
// mysql://root@127.0.0.1:3306); fails, saying so, without it.

import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { launchFirefox } from './browsers.js';
import { Daemon } from './daemon.js';
import { TestDatabase } from './mariadb.js';
import { PushService } from './push-service.js';
import { serveWeb, WEB_ROOT } from './static.js';

const FIXTURES = join(WEB_ROOT, '..', 'tests', 'fixtures');
/** Axion's table and other users' rows, as installations have them. */
const AXION_TABLE = readFileSync(join(FIXTURES, 'axion-subscription-table.mysql.sql'), 'utf8');
/** The installation's key, made by py_vapid (`vapid --gen`), as config.yaml's base.push holds it. */
const VAPID_PRIVATE_KEY = readFileSync(join(FIXTURES, 'vapid', 'cli_private_key.pem'), 'utf8');
const VAPID_PUBLIC_KEY = readFileSync(join(FIXTURES, 'vapid', 'cli_application_server_key.txt'), 'utf8').trim();

const PACKAGE = 'crm';
const USER = 'axion-migrated-user';
/** A browser the user dropped while the Python module ran: recorded inactive. */
const OLD_ENDPOINT = 'https://updates.push.services.mozilla.com/wpush/v2/gAAAAABlOldBrowserOfTheMigratedUser';
const WAIT_MS = 30000;

const stack = {};
let db;
let browser;
let page;
/** Firefox's subscription before the move: PushSubscription.toJSON(). */
let subscribed;
/** Every register Firefox sends its push service after the move. */
const registers = [];
const relayed = new EventEmitter();

before(async () => {
  // MariaDB first: without it the test fails here, saying so.
  db = await TestDatabase.create();
  await db.query(AXION_TABLE);
  stack.dir = mkdtempSync(join(tmpdir(), 'axion-push-migration-'));
  stack.push = await PushService.start(stack.dir);
  stack.web = await serveWeb({ 'GET /tickets/page.html': renderPage, 'POST /push/subscription': relay });
  browser = await launchFirefox(stack.push);
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  await stack.daemon?.stop();
  await stack.web?.stop();
  await stack.push?.stop();
  if (stack.dir && !process.env.KEEP_TEST_DIR) rmSync(stack.dir, { recursive: true, force: true });
  await db?.drop();
});

/**
 * The Axion page whose template was written for the Python module: the
 * classic script with the relay and `{{ base.push.vapid_public_key }}`.
 */
function renderPage() {
  return {
    status: 200,
    html: `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Ticket #12</title>
<script src="/axion.push.js" data-package="${PACKAGE}" data-user="${USER}"
        data-relay="/push/subscription" data-vapid-public-key="${VAPID_PUBLIC_KEY}"></script>
</head>
<body><h1>Ticket #12</h1><button onclick="axion_push_subscribe()">Notify me</button></body>
</html>`,
  };
}

/**
 * Axion's relay handler after the move: it calls ObjNotifyPush.subscribe()
 * or unsubscribe(), which now publish the daemon's commands.
 */
async function relay(body) {
  const request = JSON.parse(body);
  relayed.emit('request', request);
  const { daemon } = stack;
  if (!daemon) return { status: 503, json: { error: 'no daemon yet' } };
  if (request.action === 'subscribe') {
    const report = await daemon.command(request.package, request.user, 'subscribe', {
      ...request.subscription,
      user_agent: request.user_agent,
    });
    return report.ok ? { status: 204 } : { status: 422, json: report };
  }
  if (request.action === 'unsubscribe') {
    await daemon.command(request.package, request.user, 'unsubscribe', { endpoint: request.endpoint });
    return { status: 204 };
  }
  return { status: 400, json: { error: `unknown action ${request.action}` } };
}

/** Axion's table, every column as the server gives it (CreatedAt as text). */
function rows(where = '1', values = []) {
  return db.query(
    `SELECT User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, CAST(CreatedAt AS CHAR) AS CreatedAt, Active
       FROM def_notify_push_subscription WHERE ${where} ORDER BY User, Package, Endpoint`,
    values,
  );
}

/** A push from `axion-push test-push`; resolves with Firefox's ack once it has decrypted it. */
async function pushReaches(title) {
  const channelID = new URL(subscribed.endpoint).pathname.split('/').pop();
  const acked = stack.push.waitFor('ack', (a) => a.channelID === channelID, `an ack for "${title}"`, WAIT_MS);
  // A push signed with another key than the browser's is refused (403).
  let onRequest;
  const refused = new Promise((resolve) => {
    onRequest = (r) => r.channelID === channelID && r.status >= 400 && resolve(r);
    stack.push.on('request', onRequest);
  });
  const sent = stack.daemon.run('test-push', USER, '--package', PACKAGE, '--title', title);
  sent.catch(() => {}); // awaited below, unless the push service refused it
  const first = await Promise.race([acked.then((ack) => ({ ack })), refused.then((refusal) => ({ refusal }))]).finally(
    () => stack.push.off('request', onRequest),
  );
  assert.equal(first.refusal, undefined, `the push service refused the daemon's push: ${JSON.stringify(first.refusal)}`);
  assert.equal(first.ack.code, 100, "Firefox could not decrypt the daemon's push");
  const { stdout } = await sent;
  assert.match(stdout, /delivered/i, stdout);
  return first.ack;
}

let othersBefore;

test('before the move: Firefox subscribed with config.yaml\'s py_vapid key, and the Python module recorded it in Axion\'s table', async () => {
  // The site's page and its service worker at the root, as before the move.
  await page.goto(`${stack.web.origin}/tickets/page.html`);
  const registered = stack.push.waitFor('register', () => true, 'register from Firefox', WAIT_MS);
  subscribed = await page.evaluate(async (key) => {
    const registration = await navigator.serviceWorker.register('/service-worker.js');
    await navigator.serviceWorker.ready;
    const bytes = Uint8Array.from(atob(key.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: bytes });
    return subscription.toJSON();
  }, VAPID_PUBLIC_KEY);
  await registered;
  stack.push.on('register', (event) => registers.push(event));

  // ObjNotifyPush.subscribe(user, package, subscription_json, user_agent):
  // its INSERT, Module and CreatedAt left NULL, Active 'Y'.
  const userAgent = await page.evaluate(() => navigator.userAgent);
  await db.query(
    `INSERT INTO def_notify_push_subscription (User, Package, Endpoint, KeysP256dh, KeysAuth, UserAgent, Active)
     VALUES (?, ?, ?, ?, ?, ?, 'Y')`,
    [USER, PACKAGE, subscribed.endpoint, subscribed.keys.p256dh, subscribed.keys.auth, userAgent],
  );
  await db.query(
    `INSERT INTO def_notify_push_subscription (User, Package, Module, Endpoint, KeysP256dh, KeysAuth, UserAgent, CreatedAt, Active)
     VALUES (?, ?, 'notify', ?, ?, ?, ?, '2024-11-02 09:15:00', 'N')`,
    [USER, PACKAGE, OLD_ENDPOINT, subscribed.keys.p256dh, subscribed.keys.auth, 'Mozilla/5.0 (Windows NT 10.0; rv:115.0)'],
  );
  const mine = await rows('User = ?', [USER]);
  assert.deepEqual(
    mine.map((r) => [r.Endpoint, r.Module, r.CreatedAt, r.Active]),
    [
      [subscribed.endpoint, null, null, 'Y'],
      [OLD_ENDPOINT, 'notify', '2024-11-02 09:15:00', 'N'],
    ].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
  );
  othersBefore = await rows('User <> ?', [USER]);
  assert.equal(othersBefore.length, 5, 'the fixture\'s rows of other users');
});

test('the daemon takes over Axion\'s database and config.yaml: the same key, the module\'s row, and a push reaches Firefox', async () => {
  assert.ok(subscribed, 'the previous test subscribed Firefox');
  stack.daemon = await Daemon.start(stack.dir, stack.push.caPath, new URL(stack.push.origin).port, {
    origins: [stack.web.origin],
    databaseUrl: db.url,
    vapidPrivateKey: VAPID_PRIVATE_KEY,
    vapidPublicKey: VAPID_PUBLIC_KEY,
  });
  assert.equal(await stack.daemon.vapidPublicKey(), VAPID_PUBLIC_KEY, 'the daemon publishes another key than config.yaml\'s');

  const { stdout } = await stack.daemon.run('subscriptions', USER, '--package', PACKAGE, '--json');
  const listed = stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line));
  assert.deepEqual(
    listed.map((r) => [r.endpoint, r.active]).sort(),
    [[OLD_ENDPOINT, false], [subscribed.endpoint, true]].sort(),
    stdout,
  );

  await pushReaches(`Moved ${Date.now()}`);
  assert.deepEqual(registers, [], 'Firefox subscribed again');
});

test('the old page\'s axion_push_subscribe() keeps Firefox\'s subscription and its row, and pushes still arrive', async () => {
  assert.ok(stack.daemon, 'the previous test started the daemon');
  await page.goto(`${stack.web.origin}/tickets/page.html`);
  const asked = new Promise((resolve) => relayed.once('request', resolve));
  const result = await page.evaluate(async () => {
    try {
      return { value: await window.axion_push_subscribe() };
    } catch (error) {
      return { error: { name: error.name, code: error.code, message: error.message } };
    }
  });
  assert.equal(result.error, undefined, JSON.stringify(result.error));
  assert.equal(result.value.state, 'subscribed', JSON.stringify(result.value));
  assert.equal(result.value.endpoint, subscribed.endpoint, 'the page subscribed Firefox anew');
  const request = await asked;
  assert.equal(request.action, 'subscribe');
  assert.equal(request.subscription.endpoint, subscribed.endpoint);
  assert.deepEqual(request.subscription.keys, subscribed.keys);
  assert.deepEqual(registers, [], 'Firefox subscribed again');

  // One row per browser still: the module's row, active; the dropped
  // browser's row left inactive; other users' rows untouched.
  const mine = await rows('User = ?', [USER]);
  assert.deepEqual(
    mine.map((r) => [r.Endpoint, r.Active]),
    [[subscribed.endpoint, 'Y'], [OLD_ENDPOINT, 'N']].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
  );
  assert.deepEqual(await rows('User <> ?', [USER]), othersBefore);

  await pushReaches(`Still here ${Date.now()}`);
  assert.deepEqual(registers, [], 'Firefox subscribed again');
});
