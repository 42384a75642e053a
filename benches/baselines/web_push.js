// node's `web-push` as a baseline for the load benchmark: subscribes to every
// send command, publishes the real-time event, and sends each push of the
// user's subscriptions with up to --in-flight requests in flight over the
// kept-alive connections of node's global HTTPS agent. The subscriptions come
// from a JSON file read at start.
//
// Prints `ready` once subscribed. Run by `cargo bench --bench load`, with
// NODE_PATH pointing at the packages of package-lock.json.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const mqtt = require('mqtt');
const webPush = require('web-push');

const SENDS = 'axion/+/push/+/send';

function options() {
  // `--name=value` (a base64url key may start with `-`).
  const args = process.argv.slice(2);
  const option = (name, fallback) => {
    const given = args.find((a) => a.startsWith(`--${name}=`));
    if (given !== undefined) return given.slice(name.length + 3);
    if (fallback !== undefined) return fallback;
    throw new Error(`--${name}=… is required`);
  };
  return {
    broker: option('broker'),
    subscriptions: option('subscriptions'),
    privateKey: option('vapid-private-key'),
    publicKey: option('vapid-public-key'),
    email: option('vapid-email'),
    inFlight: Number(option('in-flight', '64')),
  };
}

function main() {
  const o = options();
  const subscriptions = JSON.parse(fs.readFileSync(o.subscriptions, 'utf8'));
  webPush.setVapidDetails(o.email, o.publicKey, o.privateKey);

  let active = 0;
  const waiting = [];
  const next = () => {
    while (active < o.inFlight && waiting.length > 0) {
      const [subscription, payload, pushOptions] = waiting.shift();
      active += 1;
      webPush
        .sendNotification(subscription, payload, pushOptions)
        .catch((e) => console.error(`push failed: ${e.statusCode || ''} ${e.message}`))
        .finally(() => {
          active -= 1;
          next();
        });
    }
  };

  const client = mqtt.connect(`mqtt://${o.broker}`, {
    clientId: `web-push-baseline-${crypto.randomUUID()}`,
    clean: true,
    keepalive: 30,
  });
  client.on('connect', () => {
    client.subscribe(SENDS, { qos: 1 }, (err) => {
      if (err) throw err;
      console.log('ready');
    });
  });
  client.on('message', (topic, message) => {
    const [, pkg, , user] = topic.split('/');
    const notification = JSON.parse(message.toString());
    notification.id = notification.id || crypto.randomUUID();
    notification.ts = Date.now() / 1000;
    client.publish(`axion/${pkg}/push/${user}`, JSON.stringify(notification), { qos: 1 });
    const payload = JSON.stringify({
      title: notification.title,
      body: notification.body || '',
      url: notification.url || '/',
      id: notification.id,
    });
    const pushOptions = {
      TTL: notification.ttl ?? 86400,
      urgency: notification.urgency || 'normal',
    };
    if (notification.topic) pushOptions.topic = notification.topic;
    for (const subscription of subscriptions[`${pkg}/${user}`] || []) {
      waiting.push([subscription, payload, pushOptions]);
    }
    next();
  });
  client.on('error', (e) => console.error(`mqtt: ${e.message}`));
}

main();
