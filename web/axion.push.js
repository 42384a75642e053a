// axion.push.js: the two functions Axion's pages call, axion_push_subscribe()
// and axion_push_unsubscribe(), kept for pages written for the Python
// ObjNotifyPush module. A classic script (no type="module", no build step);
// the work is done by axion-push.js, the ES module beside it, loaded on the
// first call, or on load in a browser the site has subscribed (to send the
// receipts the service worker kept while no page was open).
//
// One line in the page template configures it, on its own tag, with a
// relay (the host app's URL) or a broker (MQTT over WebSocket):
//
//   <script src="/resource.web/javascript/axion.push.js"
//           data-package="crm" data-user="{{ user }}"
//           data-relay="/push/subscription"
//           data-vapid-public-key="{{ base.push.vapid_public_key }}"></script>
//
//   <script src="/resource.web/javascript/axion.push.js"
//           data-package="crm" data-user="{{ user }}"
//           data-broker="wss://push.example.com/mqtt"
//           data-token="{{ subscribe_token }}"></script>
//
//   <button onclick="axion_push_subscribe()">Notify me</button>
//
// data-package, data-user   the Axion package and the signed-in user (required)
// data-relay                the host app's URL the subscription is POSTed to
//                           (see axion-push.js: {"action", "package", "user",
//                           "subscription", "user_agent", "module", "token"}),
//                           whose handler calls ObjNotifyPush.subscribe() and
//                           answers a refusal with the daemon's `code` (a
//                           browser another user subscribed then makes a
//                           fresh subscription: see axion-push.js)
// data-broker               or: the broker's MQTT-over-WebSocket URL (the
//                           embedded broker's websocket_listen); the page
//                           logs in as {package}/{user} with data-token and
//                           reads the daemon's key there
// data-vapid-public-key     the daemon's public key (base64url); needed with
//                           data-relay
// data-token                a subscribe token for the user, when the daemon
//                           requires one: with data-broker, the login's password
// data-mqtt-js              with data-broker: where mqtt.js's browser build
//                           (npm mqtt, dist/mqtt.esm.js) is [mqtt.esm.js
//                           beside this script]
// data-module               the Axion module recorded with the subscription (optional)
// data-service-worker       the service worker's URL [/service-worker.js]
// data-scope                its scope [the service worker's directory]
// data-axion-push-js        where axion-push.js is [beside this script]
//
// Both functions return a Promise of axion-push.js's status()
// ({state, permission, endpoint, message}); a failure rejects it with an
// AxionPushError, whose `code` says what went wrong and whose `message`
// says it in words for the person in front of the page.

(function () {
  'use strict';

  const script =
    document.currentScript || document.querySelector('script[src$="axion.push.js"], script[src*="axion.push.js?"]');

  // How a subscription reaches the daemon, by the attribute that selects
  // it; the first one the tag has is used. A channel that cannot fetch the
  // daemon's VAPID key itself needs data-vapid-public-key; `complete` adds
  // what the channel loads before axion-push.js can use it.
  const CHANNELS = [
    {
      attribute: 'relay',
      needsVapidKey: true,
      options: (data) => ({ relay: data.relay }),
    },
    {
      // MQTT over WebSocket, logged in as {package}/{user} with data-token
      // (axion-push.js's `mqtt` option). axion-push.js would import('mqtt'),
      // which a page without an import map cannot resolve: mqtt.js's browser
      // build is loaded here, by URL, and handed over as `mqtt.library`.
      attribute: 'broker',
      needsVapidKey: false,
      options: (data) => ({ mqtt: { url: data.broker } }),
      complete: async (options, data) => {
        const mqtt = await importBeside(data.mqttJs, 'mqtt.esm.js');
        return { ...options, mqtt: { ...options.mqtt, library: mqtt.default || mqtt } };
      },
    },
  ];

  /** The error axion-push.js would give, for when it cannot be loaded. */
  class LoadError extends Error {
    constructor(code, message, options) {
      super(message, options);
      this.name = 'AxionPushError';
      this.code = code;
    }
  }

  const imported = new Map();

  /** The ES module at `url` (relative to this script) or `file` beside it, imported once. */
  function importBeside(url, file) {
    const base = script && script.src ? script.src : document.baseURI;
    const href = new URL(url || file, base).href;
    if (!imported.has(href)) {
      const importing = import(href).catch((error) => {
        imported.delete(href); // a later call tries again
        throw new LoadError(
          'failed',
          `Notifications cannot be set up: the page could not load ${href} (${error && error.message}).`,
          { cause: error },
        );
      });
      imported.set(href, importing);
    }
    return imported.get(href);
  }

  /** axion-push.js: AxionPush and AxionPushError. */
  function load() {
    return importBeside(script ? script.dataset.axionPushJs : undefined, 'axion-push.js');
  }

  /** axion-push.js's options from the tag's data- attributes, read at each call. */
  function optionsFrom(data, AxionPushError) {
    const setupError = (code, problem) =>
      new AxionPushError(
        code,
        `Notifications are not set up correctly on this page (${problem}). Please tell the site’s administrator.`,
      );
    if (!data.package || !data.user) {
      throw setupError('failed', 'its axion.push.js tag needs data-package and data-user');
    }
    const channel = CHANNELS.find((c) => data[c.attribute]);
    if (!channel) {
      throw setupError('no-channel', `its axion.push.js tag names no ${CHANNELS.map((c) => `data-${c.attribute}`).join(' or ')}`);
    }
    if (channel.needsVapidKey && !data.vapidPublicKey) {
      throw setupError('no-vapid-key', 'its axion.push.js tag has no data-vapid-public-key');
    }
    const options = { package: data.package, user: data.user, ...channel.options(data) };
    if (data.vapidPublicKey) options.vapidPublicKey = data.vapidPublicKey;
    if (data.token) options.token = data.token;
    if (data.module) options.module = data.module;
    if (data.serviceWorker) options.serviceWorker = data.serviceWorker;
    if (data.scope) options.scope = data.scope;
    return options;
  }

  // One AxionPush per configuration: each listens to the service worker.
  const instances = new Map();

  async function run(action) {
    const { AxionPush, AxionPushError } = await load();
    const data = script ? script.dataset : {};
    const options = optionsFrom(data, AxionPushError);
    const key = JSON.stringify(options);
    if (!instances.has(key)) {
      const channel = CHANNELS.find((c) => data[c.attribute]);
      const making = (async () => new AxionPush(channel.complete ? await channel.complete(options, data) : options))();
      instances.set(key, making);
      making.catch(() => {
        if (instances.get(key) === making) instances.delete(key); // a later call tries again
      });
    }
    return (await instances.get(key))[action]();
  }

  /** Asks for permission, subscribes this browser and hands the subscription over. */
  window.axion_push_subscribe = function axion_push_subscribe() {
    return run('subscribe');
  };

  /** Unsubscribes this browser and tells the server. */
  window.axion_push_unsubscribe = function axion_push_unsubscribe() {
    return run('unsubscribe');
  };

  /**
   * On load, in a browser this site has subscribed: the receipts the
   * service worker kept while no page of the app was open go out through
   * this one (in MQTT mode nothing else can send them). Only then are
   * axion-push.js and mqtt.js loaded: other visitors' pages load nothing
   * more. A subscription the browser replaced is not handed over here, as
   * resync() would: on a shared computer that would subscribe whoever
   * opens a page, without a click; axion_push_subscribe() hands it over.
   */
  async function onLoad() {
    const data = script ? script.dataset : {};
    if (!data.package || !data.user) return; // nobody signed in
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    if (!('serviceWorker' in navigator)) return;
    const registrations = await navigator.serviceWorker.getRegistrations();
    const subscriptions = await Promise.all(registrations.map((r) => r.pushManager.getSubscription()));
    if (!subscriptions.some(Boolean)) return;
    await run('sendKeptReceipts');
  }

  onLoad().catch((error) => {
    console.warn(`axion.push.js: the receipts kept by the service worker could not be sent (${error && error.message})`);
  });
})();
