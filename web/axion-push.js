// axion-push.js: subscribe a browser to axion-push notifications.
//
// An ES module without dependencies of its own, for any page or framework:
//
//   import { AxionPush } from '/axion-push.js';
//   const push = new AxionPush({
//     package: 'crm', user: 'alice',
//     relay: '/api/push-subscription',        // production: your backend
//     // mqtt: { url: 'ws://127.0.0.1:8083' }, // or straight to the broker
//   });
//   button.onclick = () => push.subscribe();  // from a click: browsers ask
//                                             // for permission only then
//
// How a subscription reaches the daemon:
// - `relay`: the host app's own authenticated backend. A URL (POSTed as JSON,
//   with the page's cookies) or a function. The backend checks who the user
//   is and publishes the subscription on `axion/{package}/push/{user}/subscribe`.
//   This is the production default: a browser that may publish to the broker
//   could subscribe itself for any user. A URL also lets the service worker
//   hand over a replacement subscription when no page is open. A refusal
//   is an error status; when the daemon's result said `"code":
//   "endpoint-taken"`, the answer's JSON body carries that `code` (the
//   result report itself will do), or a function relay throws an error with
//   that `code`.
// - `mqtt`: MQTT over WebSocket straight to the broker. The page logs in
//   as `{package}/{user}` with its subscribe token (`token`) as the
//   password, which the embedded broker's `websocket_listen` accepts: it
//   confines the connection to that user's topics (on Mosquitto with the
//   shipped ACL, pass the user's own account as `mqtt.username` and
//   `mqtt.password`). It loads mqtt.js (npm `mqtt`) with `import('mqtt')`,
//   so the page needs an import map or a bundler for it, or passes the
//   module as `mqtt.library`.
//
// The VAPID public key is `vapidPublicKey` when given, else the retained
// `axion/{package}/push/vapid` (falling back to `axion/push/vapid`) read over
// MQTT.
//
// Every failure is an AxionPushError whose `code` says what went wrong and
// whose `message` says it in words a person understands.
//
// A browser someone else subscribed before (a shared computer: alice used
// it, bob signs in) keeps alice's subscription until the daemon hears of
// it. Where the daemon requires subscribe tokens it refuses to move that
// endpoint to bob (`endpoint-taken`): subscribe() then drops it in the
// browser, makes a fresh subscription and hands that over for bob, once.
// Alice's push service soon answers 404/410 for the old endpoint, and the
// daemon deactivates her row.

const RESULT_TIMEOUT_MS = 15000;
/**
 * How long the browser's push service may take to hand out a subscription.
 * Chromium waits without end when it cannot reach its push service (Google's
 * FCM, blocked by a firewall say); Firefox gives up within seconds.
 */
const PUSH_SERVICE_TIMEOUT_MS = 20000;
/** How long to wait for a package's own VAPID key once the shared one came. */
const PACKAGE_KEY_GRACE_MS = 300;
const DELIVERED_PREFIX = 'axion-push:delivered:';
/** The daemon's `code` for an endpoint that is another user's. */
const ENDPOINT_TAKEN = 'endpoint-taken';
/** Receipts published over one connection (the embedded broker's burst is 10). */
const RECEIPTS_PER_CONNECTION = 8;

export class AxionPushError extends Error {
  /**
   * @param {string} code one of: unsupported, insecure-context,
   *   permission-denied, permission-dismissed, no-vapid-key, no-channel,
   *   broker-unreachable, login-refused, push-service-unreachable,
   *   no-answer, rejected, endpoint-taken, relay-failed, failed
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = 'AxionPushError';
    this.code = code;
  }
}

function base64urlToBytes(value) {
  const base64 = value.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function bytesToBase64url(buffer) {
  let binary = '';
  for (const b of new Uint8Array(buffer)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function newId() {
  return crypto.randomUUID ? crypto.randomUUID() : bytesToBase64url(crypto.getRandomValues(new Uint8Array(16)));
}

/** Why push notifications cannot work here, or null when they can. */
function unsupportedReason() {
  if (typeof window === 'undefined' || typeof navigator === 'undefined') {
    return new AxionPushError('unsupported', 'Notifications can only be set up from a web page.');
  }
  if (!window.isSecureContext) {
    return new AxionPushError(
      'insecure-context',
      'This page is not served over HTTPS, and browsers only allow notifications on secure pages.',
    );
  }
  if (!('serviceWorker' in navigator)) {
    return new AxionPushError(
      'unsupported',
      'This browser cannot run service workers (they may be turned off, or this is a private window), so it cannot receive notifications.',
    );
  }
  if (!('PushManager' in window) || !('Notification' in window)) {
    return new AxionPushError(
      'unsupported',
      'This browser does not support push notifications. On an iPhone or iPad, add this site to the Home Screen first.',
    );
  }
  return null;
}

function waitActive(registration) {
  const worker = registration.installing || registration.waiting || registration.active;
  if (worker.state === 'activated') return Promise.resolve(registration);
  return new Promise((resolve, reject) => {
    worker.addEventListener('statechange', () => {
      if (worker.state === 'activated') resolve(registration);
      if (worker.state === 'redundant') {
        reject(new AxionPushError('failed', 'The service worker could not be installed.'));
      }
    });
  });
}

async function loadMqtt() {
  try {
    return (await import('mqtt')).default;
  } catch (error) {
    throw new AxionPushError(
      'failed',
      'The page could not load mqtt.js: give it an import map entry for "mqtt", bundle it, or pass the module as mqtt.library.',
      { cause: error },
    );
  }
}

export class AxionPush {
  /**
   * @param {object} options
   * @param {string} options.package the Axion package, e.g. "crm"
   * @param {string} options.user the Axion user this browser belongs to
   * @param {string} [options.serviceWorker="/service-worker.js"] its URL
   * @param {string} [options.scope] the service worker's scope
   * @param {string} [options.vapidPublicKey] base64url; read over MQTT when absent
   * @param {string|Function} [options.relay] the backend that records subscriptions
   * @param {{url: string, username?: string, password?: string, topicPrefix?: string, library?: object}} [options.mqtt]
   *   the login is `{package}/{user}` with `token` as the password unless
   *   username/password are given
   * @param {string|Function} [options.token] a subscribe token, when the
   *   daemon requires one: the MQTT login's password, and sent with every
   *   command
   * @param {string} [options.module] recorded with the subscription
   * @param {number} [options.timeout=15000] ms to wait for the daemon's answer
   * @param {number} [options.pushServiceTimeout=20000] ms to wait for the
   *   browser's push service to hand out a subscription
   * @param {Function} [options.onchange] called with status() after the
   *   browser replaced the subscription and it was handed over again
   */
  constructor(options) {
    if (!options || typeof options.package !== 'string' || !options.package) {
      throw new TypeError('AxionPush needs a package');
    }
    if (typeof options.user !== 'string' || !options.user) {
      throw new TypeError('AxionPush needs a user');
    }
    this.options = {
      serviceWorker: '/service-worker.js',
      timeout: RESULT_TIMEOUT_MS,
      pushServiceTimeout: PUSH_SERVICE_TIMEOUT_MS,
      ...options,
    };
    if (typeof navigator !== 'undefined' && navigator.serviceWorker) {
      navigator.serviceWorker.addEventListener('message', (event) => this.#onWorkerMessage(event));
      if (!AxionPush.#listening) {
        AxionPush.#listening = true;
        navigator.serviceWorker.addEventListener('message', (event) => AxionPush.#onReceipts(event));
      }
    }
    AxionPush.#instances.add(this);
  }

  /** Every AxionPush this page made: receipts go through one of them. */
  static #instances = new Set();
  static #listening = false;

  /**
   * Receipts the service worker hands over (what became of notifications),
   * sent once per page by its first AxionPush for their user. A page with
   * none for that user says so at once, and the worker asks another page.
   */
  static async #onReceipts(event) {
    const message = event.data || {};
    if (message.type !== 'axion-push:receipts') return;
    const port = event.ports && event.ports[0];
    const mine = [...AxionPush.#instances].find(
      (p) => p.options.package === message.package && p.options.user === message.user,
    );
    if (!mine) {
      if (port) port.postMessage({ ok: false });
      return;
    }
    await mine.#forwardReceipts(message.receipts, port);
  }

  /** null when this browser can receive notifications, else an AxionPushError saying why not. */
  static support() {
    return unsupportedReason();
  }

  /**
   * Where this browser stands:
   * `{state, permission, endpoint, message}`, `state` one of
   * "unsupported", "blocked", "unsubscribed", "subscribed".
   */
  async status() {
    const unsupported = unsupportedReason();
    if (unsupported) {
      return { state: 'unsupported', permission: 'unsupported', endpoint: null, message: unsupported.message };
    }
    const permission = Notification.permission;
    const registration = await this.#registration();
    const subscription = registration ? await registration.pushManager.getSubscription() : null;
    if (permission === 'denied') {
      return {
        state: 'blocked',
        permission,
        endpoint: null,
        message: 'Notifications are blocked for this site. Allow them in the browser’s site settings, then subscribe again.',
      };
    }
    if (!subscription || permission !== 'granted') {
      return { state: 'unsubscribed', permission, endpoint: null, message: 'This browser is not subscribed.' };
    }
    return {
      state: 'subscribed',
      permission,
      endpoint: subscription.endpoint,
      message: 'This browser receives notifications.',
    };
  }

  /** Asks for permission, subscribes, and hands the subscription to axion-push. */
  async subscribe() {
    const unsupported = unsupportedReason();
    if (unsupported) throw unsupported;
    await this.#askPermission();
    const registration = await this.#register();
    const key = await this.#vapidKey();
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !this.#sameKey(subscription, key)) {
      // Subscribed with another server's key: it cannot be reused.
      await this.#deliverQuietly('unsubscribe', { endpoint: subscription.endpoint });
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) subscription = await this.#newSubscription(registration, key);
    subscription = await this.#handOver(registration, key, subscription);
    await this.#tellWorker(registration, this.#workerSettings(key, subscription));
    return this.status();
  }

  /** Unsubscribes this browser and tells axion-push to stop sending to it. */
  async unsubscribe() {
    const unsupported = unsupportedReason();
    if (unsupported) throw unsupported;
    const registration = await this.#registration();
    const subscription = registration ? await registration.pushManager.getSubscription() : null;
    if (subscription) {
      let told = null;
      try {
        await this.#deliver('unsubscribe', { endpoint: subscription.endpoint });
      } catch (error) {
        told = error;
      }
      // The browser stops receiving either way; a push service answers the
      // daemon 404/410 for a dropped subscription, which deactivates it.
      await subscription.unsubscribe();
      this.#forgetDelivered();
      await this.#tellWorker(registration, null);
      if (told) {
        throw new AxionPushError(
          told.code,
          `This browser no longer receives notifications, but the server could not be told (${told.message}). It will notice by itself at the next notification.`,
          { cause: told },
        );
      }
    }
    return this.status();
  }

  /**
   * Hands the current subscription to axion-push again if the browser
   * replaced it while no page was open, and tells the service worker that
   * a page of the app is open: receipts it kept while none was can go
   * through this one now. Call it on page load.
   */
  async resync() {
    if (unsupportedReason() || Notification.permission !== 'granted') return this.status();
    const registration = await this.#registration();
    const subscription = registration ? await registration.pushManager.getSubscription() : null;
    if (!subscription) return this.status();
    if (this.#delivered() !== subscription.endpoint) {
      const current = subscription.options && subscription.options.applicationServerKey;
      const key = current ? bytesToBase64url(current) : await this.#vapidKey();
      const handed = await this.#handOver(registration, key, subscription);
      if (handed !== subscription) {
        // New settings send the kept receipts too.
        await this.#tellWorker(registration, this.#workerSettings(key, handed));
        return this.status();
      }
    }
    this.#pageOpen(registration);
    return this.status();
  }

  /**
   * Tells the service worker that a page of the app is open, so that the
   * receipts it kept while none was go out through this one; hands nothing
   * over (resync() does both). For pages that must not subscribe anyone
   * by being opened: axion.push.js calls it on load.
   */
  async sendKeptReceipts() {
    if (unsupportedReason() || Notification.permission !== 'granted') return this.status();
    const registration = await this.#registration();
    if (registration) this.#pageOpen(registration);
    return this.status();
  }

  // ---- browser side ------------------------------------------------------

  async #askPermission() {
    if (Notification.permission === 'granted') return;
    if (Notification.permission === 'denied') {
      throw new AxionPushError(
        'permission-denied',
        'Notifications are blocked for this site. Allow them in the browser’s site settings, then try again.',
      );
    }
    const answer = await Notification.requestPermission();
    if (answer === 'denied') {
      throw new AxionPushError('permission-denied', 'You chose not to allow notifications, so none will be shown.');
    }
    if (answer !== 'granted') {
      throw new AxionPushError(
        'permission-dismissed',
        'The browser did not get an answer to its question about notifications. Try again and choose “Allow”.',
      );
    }
  }

  async #registration() {
    const url = new URL(this.options.serviceWorker, location.href);
    const scope = this.options.scope ? new URL(this.options.scope, location.href).href : new URL('./', url).href;
    return (await navigator.serviceWorker.getRegistration(scope)) || null;
  }

  async #register() {
    try {
      const registration = await navigator.serviceWorker.register(this.options.serviceWorker, {
        scope: this.options.scope,
      });
      return await waitActive(registration);
    } catch (error) {
      if (error instanceof AxionPushError) throw error;
      throw new AxionPushError(
        'failed',
        `The service worker at ${this.options.serviceWorker} could not be installed: ${error.message}`,
        { cause: error },
      );
    }
  }

  /** A new subscription from the browser's push service. */
  async #newSubscription(registration, key) {
    try {
      return await this.#withinPushServiceTimeout(
        registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: base64urlToBytes(key),
        }),
      );
    } catch (error) {
      throw this.#subscribeError(error);
    }
  }

  /**
   * Hands `subscription` over; when its endpoint is another user's, drops
   * it in the browser and hands over a fresh one instead, once. Resolves
   * with the subscription handed over.
   */
  async #handOver(registration, key, subscription) {
    try {
      await this.#deliverSubscription(subscription);
      return subscription;
    } catch (error) {
      if (!(error instanceof AxionPushError) || error.code !== ENDPOINT_TAKEN) throw error;
    }
    // This browser's subscription is still someone else's on the server.
    // Dropped here, it is gone at the push service too, which answers the
    // daemon 404/410 for it from now on.
    await subscription.unsubscribe();
    const fresh = await this.#newSubscription(registration, key);
    try {
      await this.#deliverSubscription(fresh);
    } catch (error) {
      if (!(error instanceof AxionPushError) || error.code !== ENDPOINT_TAKEN) throw error;
      throw new AxionPushError(
        ENDPOINT_TAKEN,
        `This browser was subscribed for another account on this site, so it made a new subscription for you, but the notification server refused that one too (${error.message}). Try again; if it keeps happening, tell the site’s administrator.`,
        { cause: error },
      );
    }
    return fresh;
  }

  #sameKey(subscription, key) {
    const current = subscription.options && subscription.options.applicationServerKey;
    return !current || bytesToBase64url(current) === key;
  }

  /**
   * `subscribing`, or an AxionPushError once the push service has kept the
   * browser waiting too long. A subscription that arrives later stays in
   * the browser; the next subscribe() or resync() hands it over.
   */
  #withinPushServiceTimeout(subscribing) {
    const ms = this.options.pushServiceTimeout;
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new AxionPushError(
              'push-service-unreachable',
              `The browser’s push service did not answer within ${Math.round(ms / 1000)} s, so this browser cannot subscribe. The network may block it (a firewall or proxy) or be down; try again later or on another network.`,
            ),
          ),
        ms,
      );
    });
    return Promise.race([subscribing, timeout]).finally(() => clearTimeout(timer));
  }

  #subscribeError(error) {
    if (error instanceof AxionPushError) return error;
    if (error && error.name === 'NotAllowedError') {
      return new AxionPushError(
        'permission-denied',
        'The browser did not allow this site to receive push messages.',
        { cause: error },
      );
    }
    if (error && error.name === 'AbortError') {
      return new AxionPushError(
        'push-service-unreachable',
        'The browser could not reach its push service. Check the network connection and try again.',
        { cause: error },
      );
    }
    return new AxionPushError('failed', `The browser could not subscribe: ${error && error.message}`, { cause: error });
  }

  /** What the service worker needs to resubscribe on its own. */
  #workerSettings(applicationServerKey, subscription) {
    const { relay } = this.options;
    return {
      package: this.options.package,
      user: this.options.user,
      module: this.options.module || null,
      // Only a URL can be used from the service worker; a function lives in the page.
      relayUrl: typeof relay === 'string' ? new URL(relay, location.href).href : null,
      applicationServerKey,
      endpoint: subscription.endpoint,
    };
  }

  /** Records the service worker's settings (null: forget them). */
  #tellWorker(registration, settings) {
    const worker = registration.active;
    if (!worker) return Promise.resolve();
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      const timer = setTimeout(resolve, 2000);
      channel.port1.onmessage = () => {
        clearTimeout(timer);
        resolve();
      };
      worker.postMessage({ type: 'axion-push:settings', settings }, [channel.port2]);
    });
  }

  /**
   * Tells the service worker a page of the app is open, to send the
   * receipts it kept (through this page, or its relay). Not waited for:
   * the worker asks this page for them when it is ready.
   */
  #pageOpen(registration) {
    const worker = registration.active;
    if (worker) worker.postMessage({ type: 'axion-push:ready' });
  }

  async #onWorkerMessage(event) {
    const message = event.data || {};
    if (message.type !== 'axion-push:subscriptionchange') return;
    if (message.user && (message.package !== this.options.package || message.user !== this.options.user)) return;
    const registration = await this.#registration();
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (!subscription || subscription.endpoint !== message.subscription.endpoint) return;
    try {
      if (message.oldEndpoint && message.oldEndpoint !== subscription.endpoint) {
        await this.#deliverQuietly('unsubscribe', { endpoint: message.oldEndpoint });
      }
      await this.#deliverSubscription(subscription);
      await this.#tellWorker(registration, this.#workerSettings(message.applicationServerKey, subscription));
      if (this.options.onchange) this.options.onchange(await this.status());
    } catch (error) {
      if (this.options.onchange) this.options.onchange({ ...(await this.status()), error });
    }
  }

  /**
   * Receipts the service worker hands over (what became of notifications):
   * sent on this page's channel, then the worker is told whether they went.
   * One the daemon refuses (a replay, say) is gone too: it would be refused
   * again.
   */
  async #forwardReceipts(list, port) {
    const receipts = Array.isArray(list) ? list : [];
    let ok = true;
    const { relay } = this.options;
    try {
      if (relay) {
        await this.#relayRequest({ action: 'receipt', package: this.options.package, user: this.options.user, receipts });
      } else if (this.options.mqtt) {
        // Refused ones among the answers are gone too: they would be
        // refused again. A few per connection: the broker lets a page
        // publish a burst of 10, then one a second.
        for (let i = 0; i < receipts.length; i += RECEIPTS_PER_CONNECTION) {
          const answers = await this.#publishAll('receipt', receipts.slice(i, i + RECEIPTS_PER_CONNECTION));
          // Past the user's allowance: the worker keeps them for later.
          if (answers.some((a) => !a.ok && a.code === 'rate-limited')) ok = false;
        }
      } else {
        ok = false;
      }
    } catch (_) {
      ok = false;
    }
    if (port) port.postMessage({ ok });
  }

  #deliveredKey() {
    return `${DELIVERED_PREFIX}${this.options.package}:${this.options.user}`;
  }

  #delivered() {
    try {
      return localStorage.getItem(this.#deliveredKey());
    } catch (_) {
      return null;
    }
  }

  #forgetDelivered() {
    try {
      localStorage.removeItem(this.#deliveredKey());
    } catch (_) {
      // Storage may be off; resync() then hands the subscription over again.
    }
  }

  /** The subscribe token: the `token` option, or what its function returns. */
  async #token() {
    const { token } = this.options;
    return typeof token === 'function' ? token() : token;
  }

  async #deliverSubscription(subscription) {
    const token = await this.#token();
    const message = {
      ...subscription.toJSON(),
      user_agent: navigator.userAgent,
    };
    if (this.options.module) message.module = this.options.module;
    if (token) message.token = token;
    await this.#deliver('subscribe', message);
    try {
      localStorage.setItem(this.#deliveredKey(), subscription.endpoint);
    } catch (_) {
      // See #forgetDelivered.
    }
  }

  async #deliverQuietly(verb, message) {
    try {
      await this.#deliver(verb, message);
    } catch (_) {
      // Best effort: the push service's 404/410 deactivates it anyway.
    }
  }

  // ---- the channel to axion-push -------------------------------------------

  async #deliver(verb, message) {
    const { relay, mqtt } = this.options;
    if (relay) return this.#relay(verb, message);
    if (mqtt) return this.#publish(verb, message);
    throw new AxionPushError(
      'no-channel',
      'AxionPush was given neither a relay nor an MQTT broker, so it cannot hand the subscription over.',
    );
  }

  async #relay(verb, message) {
    const { relay } = this.options;
    const request = {
      action: verb,
      package: this.options.package,
      user: this.options.user,
      ...(verb === 'subscribe'
        ? {
            subscription: { endpoint: message.endpoint, expirationTime: message.expirationTime, keys: message.keys },
            user_agent: message.user_agent,
            module: message.module,
            token: message.token,
          }
        : { endpoint: message.endpoint }),
    };
    try {
      return await this.#relayRequest(request);
    } catch (error) {
      if (error instanceof AxionPushError) throw error;
      throw new AxionPushError(
        error && error.code === ENDPOINT_TAKEN ? ENDPOINT_TAKEN : 'relay-failed',
        `The app’s server did not accept the subscription: ${error && error.message}`,
        { cause: error },
      );
    }
  }

  /** Hands one request to the relay: the host app's function, or a POST to its URL. */
  async #relayRequest(request) {
    const { relay } = this.options;
    if (typeof relay === 'function') return relay(request);
    const response = await fetch(relay, {
      method: 'POST',
      credentials: 'include',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(request),
    });
    if (!response.ok) {
      const text = await response.text();
      const detail = text.slice(0, 200);
      const error = new Error(`it answered ${response.status}${detail ? `: ${detail}` : ''}`);
      try {
        error.code = JSON.parse(text).code;
      } catch (_) {
        // Not JSON: no code.
      }
      throw error;
    }
    return undefined;
  }

  #topic(suffix) {
    const prefix = (this.options.mqtt && this.options.mqtt.topicPrefix) || '';
    return `${prefix}axion/${suffix}`;
  }

  async #connect() {
    const settings = this.options.mqtt;
    if (!settings || !settings.url) {
      throw new AxionPushError(
        'no-channel',
        'No MQTT broker was configured, so the server’s key cannot be fetched. Pass vapidPublicKey or mqtt.url.',
      );
    }
    const library = settings.library || (await loadMqtt());
    // The browser login: who this page is for, proven by its token.
    const username = settings.username || `${this.options.package}/${this.options.user}`;
    const password = settings.username ? settings.password : await this.#token();
    return new Promise((resolve, reject) => {
      const client = library.connect(settings.url, {
        clientId: `axion-push-web-${newId()}`,
        clean: true,
        reconnectPeriod: 0,
        connectTimeout: this.options.timeout,
        username,
        password: password || undefined,
      });
      const fail = (error) => {
        client.end(true);
        // CONNACK 4 (bad user name or password), 5 (not authorized).
        if (error && (error.code === 4 || error.code === 5)) {
          reject(
            new AxionPushError(
              'login-refused',
              'The notification server did not accept this page’s sign-in: its token is missing, wrong or has expired. Reload the page and try again; if it keeps happening, tell the site’s administrator.',
              { cause: error },
            ),
          );
          return;
        }
        reject(
          new AxionPushError(
            'broker-unreachable',
            `Could not reach the notification server at ${settings.url}: ${error ? error.message : 'the connection closed'}. It may be down, or not accept pages from this site.`,
            { cause: error },
          ),
        );
      };
      client.once('connect', () => {
        client.removeListener('error', fail);
        client.removeListener('close', fail);
        resolve(client);
      });
      client.once('error', fail);
      client.once('close', fail);
    });
  }

  /** Publishes a command and waits for the daemon's result report. */
  async #publish(verb, message) {
    const [result] = await this.#publishAll(verb, [message]);
    if (!result.ok) {
      throw new AxionPushError(
        result.code === ENDPOINT_TAKEN ? ENDPOINT_TAKEN : 'rejected',
        `The notification server refused to ${verb}: ${result.error || 'no reason given'}.`,
      );
    }
    return result;
  }

  /**
   * Publishes one command per message over one connection and resolves
   * with the daemon's result reports, in order (refusals among them).
   */
  async #publishAll(verb, messages) {
    if (!messages.length) return [];
    const token = await this.#token();
    const client = await this.#connect();
    const commands = messages.map((message) => {
      const command = { ...message, id: newId() };
      // A receipt carries its own token, the one its push came with.
      if (token && verb !== 'receipt') command.token = token;
      return command;
    });
    const base = `${this.options.package}/push/${this.options.user}`;
    const resultTopic = this.#topic(`${base}/result`);
    try {
      return await new Promise((resolve, reject) => {
        const results = new Map();
        const timer = setTimeout(
          () =>
            reject(
              new AxionPushError(
                'no-answer',
                `The notification server did not answer within ${Math.round(this.options.timeout / 1000)} s. Is axion-push running?`,
              ),
            ),
          this.options.timeout,
        );
        client.on('message', (topic, payload) => {
          if (topic !== resultTopic) return;
          let report;
          try {
            report = JSON.parse(payload.toString());
          } catch (_) {
            return;
          }
          if (!commands.some((c) => c.id === report.id)) return;
          results.set(report.id, report);
          if (results.size < commands.length) return;
          clearTimeout(timer);
          resolve(commands.map((c) => results.get(c.id)));
        });
        client.on('close', () => {
          clearTimeout(timer);
          reject(new AxionPushError('broker-unreachable', 'The connection to the notification server was lost.'));
        });
        client.subscribe(resultTopic, { qos: 1 }, (error) => {
          if (error) return reject(new AxionPushError('failed', `Could not listen for the answer: ${error.message}`));
          for (const command of commands) {
            client.publish(this.#topic(`${base}/${verb}`), JSON.stringify(command), { qos: 1 }, (e) => {
              if (e) reject(new AxionPushError('failed', `Could not send the ${verb} request: ${e.message}`));
            });
          }
        });
      });
    } finally {
      client.removeAllListeners('close');
      client.end(true);
    }
  }

  async #vapidKey() {
    if (this.options.vapidPublicKey) return this.options.vapidPublicKey;
    const packageTopic = this.#topic(`${this.options.package}/push/vapid`);
    const sharedTopic = this.#topic('push/vapid');
    const client = await this.#connect();
    try {
      const key = await new Promise((resolve) => {
        let shared = null;
        let grace = null;
        const timer = setTimeout(() => resolve(shared), this.options.timeout);
        client.on('message', (topic, payload) => {
          let key = null;
          try {
            key = JSON.parse(payload.toString()).public_key || null;
          } catch (_) {
            return;
          }
          if (topic === packageTopic && key) {
            clearTimeout(timer);
            clearTimeout(grace);
            resolve(key);
          } else if (topic === sharedTopic && key && !shared) {
            // The package's own key, if it has one, is normally already
            // here; give it a moment in case the broker sends it second.
            shared = key;
            grace = setTimeout(() => {
              clearTimeout(timer);
              resolve(shared);
            }, PACKAGE_KEY_GRACE_MS);
          }
        });
        client.subscribe([packageTopic, sharedTopic], { qos: 1 });
      });
      if (!key) {
        throw new AxionPushError(
          'no-vapid-key',
          'The notification server did not publish its public key, so this browser cannot subscribe. Is axion-push running and connected to this broker?',
        );
      }
      return key;
    } finally {
      client.end(true);
    }
  }
}
