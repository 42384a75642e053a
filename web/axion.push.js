// axion.push.js: the two functions Axion's pages call, axion_push_subscribe()
// and axion_push_unsubscribe(), kept for pages written for the Python
// ObjNotifyPush module. A classic script (no type="module", no build step);
// the work is done by axion-push.js, the ES module beside it, loaded on the
// first call.
//
// One line in the page template configures it, on its own tag:
//
//   <script src="/resource.web/javascript/axion.push.js"
//           data-package="crm" data-user="{{ user }}"
//           data-relay="/push/subscription"
//           data-vapid-public-key="{{ base.push.vapid_public_key }}"></script>
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
// data-vapid-public-key     the daemon's public key (base64url)
// data-token                a subscribe token for the user, when the daemon
//                           requires one (optional)
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
  // daemon's VAPID key itself needs data-vapid-public-key. MQTT over
  // WebSocket (axion-push.js's `mqtt` option, logged in as the user with
  // data-token) is not offered here yet: it needs mqtt.js as a module, and
  // a page without a build step has no import map for it; it will be one
  // more entry.
  const CHANNELS = [
    {
      attribute: 'relay',
      needsVapidKey: true,
      options: (data) => ({ relay: data.relay }),
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

  let loading = null;

  function load() {
    if (!loading) {
      const data = script ? script.dataset : {};
      const base = script && script.src ? script.src : document.baseURI;
      const url = new URL(data.axionPushJs || 'axion-push.js', base).href;
      loading = import(url).catch((error) => {
        loading = null; // a later call tries again
        throw new LoadError(
          'failed',
          `Notifications cannot be set up: the page could not load ${url} (${error && error.message}).`,
          { cause: error },
        );
      });
    }
    return loading;
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
    const options = optionsFrom(script ? script.dataset : {}, AxionPushError);
    const key = JSON.stringify(options);
    if (!instances.has(key)) instances.set(key, new AxionPush(options));
    return instances.get(key)[action]();
  }

  /** Asks for permission, subscribes this browser and hands the subscription over. */
  window.axion_push_subscribe = function axion_push_subscribe() {
    return run('subscribe');
  };

  /** Unsubscribes this browser and tells the server. */
  window.axion_push_unsubscribe = function axion_push_unsubscribe() {
    return run('unsubscribe');
  };
})();
