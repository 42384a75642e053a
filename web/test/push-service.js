// A Web Push service on loopback, for the browser tests. It is both halves
// of what Mozilla's autopush does:
// - the browser half speaks Firefox's WebSocket push protocol (hello,
//   register, unregister, notification, ack; documented in Firefox's
//   PushServiceWebSocket.sys.mjs), so a real Firefox subscribes through it
//   when `dom.push.serverURL` points here;
// - the application-server half accepts the daemon's POSTs over HTTPS
//   (HTTP/2, a certificate from a CA of its own) with the checks a push
//   service makes: `TTL` and `Content-Encoding: aes128gcm` present, a VAPID
//   JWT that verifies, whose `aud` is this origin and whose key is the one
//   the browser subscribed with. It forwards the body untouched; Firefox
//   decrypts it and acks with code 100 (decrypted and delivered), 101
//   (could not decrypt) or 102 (not delivered).
//
// A simulated browser (for Chromium, which cannot use a push service of
// ours) is a P-256 key pair and auth secret kept here: its pushes are
// decrypted with http_ece, the library node's web-push uses.

import { execFileSync } from 'node:child_process';
import { createECDH, createPublicKey, randomBytes, randomUUID, verify } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { join } from 'node:path';
import ece from 'http_ece';
import { WebSocketServer } from 'ws';

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const unb64url = (text) => Buffer.from(text, 'base64url');

/** A CA and a leaf for 127.0.0.1 signed by it (rustls refuses a CA certificate as a server's). */
function makeCertificates(dir) {
  const run = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const p = (name) => join(dir, name);
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=axion-push test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1');
  const ext = p('server.ext');
  execFileSync('sh', ['-c', `printf '%s\\n' 'subjectAltName=IP:127.0.0.1' 'basicConstraints=CA:FALSE' 'extendedKeyUsage=serverAuth' > '${ext}'`]);
  run('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('server.pem'), '-days', '2', '-extfile', ext);
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key') };
}

/** Checks `Authorization: vapid t=…, k=…`; returns {claims, key} or throws why not. */
function verifyVapid(header, audience) {
  const match = /^vapid t=([^,\s]+),\s*k=([^,\s]+)$/.exec(header || '');
  if (!match) throw new Error(`Authorization is not "vapid t=…, k=…": ${header}`);
  const [, token, k] = match;
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('the VAPID token is not a JWT');
  const point = unb64url(k);
  if (point.length !== 65 || point[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
  const key = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)) },
    format: 'jwk',
  });
  const header_ = JSON.parse(unb64url(parts[0]));
  if (header_.alg !== 'ES256') throw new Error(`the JWT is ${header_.alg}, not ES256`);
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  if (!verify('sha256', signed, { key, dsaEncoding: 'ieee-p1363' }, unb64url(parts[2]))) {
    throw new Error('the VAPID signature does not verify');
  }
  const claims = JSON.parse(unb64url(parts[1]));
  const now = Date.now() / 1000;
  if (claims.aud !== audience) throw new Error(`aud is ${claims.aud}, not ${audience}`);
  if (!(claims.exp > now && claims.exp <= now + 24 * 3600)) throw new Error(`exp ${claims.exp} is not within 24 h`);
  if (!/^(mailto:|https:)/.test(claims.sub || '')) throw new Error(`sub ${claims.sub} is not a mailto: or https: URL`);
  return { claims, key: point };
}

export class PushService extends EventEmitter {
  /** @param {string} dir a directory for the certificates */
  static async start(dir) {
    const service = new PushService(makeCertificates(dir));
    await service.#listen();
    return service;
  }

  constructor(certs) {
    super();
    this.caPath = certs.ca;
    this.certs = certs;
    /** channelID → {uaid, key (Buffer|null)} for Firefox; {simulated} for simulated browsers */
    this.channels = new Map();
    /** uaid → WebSocket of the connected Firefox */
    this.sockets = new Map();
    /** Every POST, with how it was answered: {channelID, status, reason, ttl, urgency} */
    this.requests = [];
    /** Every ack and nack Firefox sent: {channelID, version, code} */
    this.acks = [];
    /** Plaintexts of simulated browsers' pushes: {channelID, plaintext, ttl, urgency} */
    this.decrypted = [];
    this.pending = new Map(); // uaid → notifications waiting for a connection
    this.droppedUaids = new Set();
  }

  async #listen() {
    this.https = http2.createSecureServer(
      { cert: readFileSync(this.certs.cert), key: readFileSync(this.certs.key), allowHTTP1: true },
      (req, res) => this.#onPost(req, res),
    );
    this.sessions = new Set();
    this.https.on('session', (session) => {
      this.sessions.add(session);
      session.on('close', () => this.sessions.delete(session));
    });
    this.https.listen(0, '127.0.0.1');
    await once(this.https, 'listening');
    this.origin = `https://127.0.0.1:${this.https.address().port}`;

    this.http = http.createServer((_, res) => res.writeHead(426).end());
    this.ws = new WebSocketServer({ server: this.http });
    this.ws.on('connection', (socket) => this.#onSocket(socket));
    this.http.listen(0, '127.0.0.1');
    await once(this.http, 'listening');
    this.wsUrl = `ws://127.0.0.1:${this.http.address().port}/`;
  }

  // ---- Firefox's side ----------------------------------------------------

  #onSocket(socket) {
    let uaid = null;
    socket.on('message', (raw) => {
      let message;
      try {
        message = JSON.parse(raw.toString());
      } catch (_) {
        socket.close(1002, 'not JSON');
        return;
      }
      const send = (reply) => socket.send(JSON.stringify(reply));
      switch (message.messageType) {
        case undefined:
          send({}); // ping
          break;
        case 'hello': {
          const known = message.uaid && !this.droppedUaids.has(message.uaid);
          uaid = known ? message.uaid : randomUUID().replace(/-/g, '');
          this.sockets.set(uaid, socket);
          send({ messageType: 'hello', uaid, status: 200, use_webpush: true, broadcasts: {} });
          this.emit('hello', { uaid, resumed: Boolean(known) });
          for (const notification of this.pending.get(uaid) || []) send(notification);
          this.pending.delete(uaid);
          break;
        }
        case 'register': {
          const key = message.key ? unb64url(message.key) : null;
          this.channels.set(message.channelID, { uaid, key });
          send({
            messageType: 'register',
            channelID: message.channelID,
            status: 200,
            uaid,
            pushEndpoint: `${this.origin}/wpush/${message.channelID}`,
          });
          this.emit('register', { channelID: message.channelID, uaid });
          break;
        }
        case 'unregister':
          this.channels.delete(message.channelID);
          send({ messageType: 'unregister', channelID: message.channelID, status: 200 });
          this.emit('unregister', { channelID: message.channelID });
          break;
        case 'ack':
          for (const update of message.updates || []) {
            this.acks.push(update);
            this.emit('ack', update);
          }
          break;
        case 'nack':
          this.acks.push({ version: message.version, code: message.code, nack: true });
          this.emit('ack', { version: message.version, code: message.code, nack: true });
          break;
        default:
          break;
      }
    });
    socket.on('close', () => {
      if (uaid && this.sockets.get(uaid) === socket) this.sockets.delete(uaid);
    });
  }

  /**
   * Forgets every Firefox identity and drops the connections: at its next
   * hello Firefox gets a new UAID, drops its subscriptions and fires
   * `pushsubscriptionchange` in their service workers, as it does when the
   * real push service loses its records.
   */
  dropAllSubscriptions() {
    for (const [uaid, socket] of this.sockets) {
      this.droppedUaids.add(uaid);
      socket.terminate();
    }
    this.sockets.clear();
    for (const [channelID, channel] of this.channels) {
      if (!channel.simulated) this.channels.delete(channelID);
    }
  }

  // ---- simulated browsers -------------------------------------------------

  /** A browser whose keys live here: `subscription` is its PushSubscription.toJSON(). */
  simulatedBrowser() {
    const channelID = randomUUID();
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const auth = randomBytes(16);
    this.channels.set(channelID, { simulated: { ecdh, auth } });
    return {
      channelID,
      subscription: {
        endpoint: `${this.origin}/wpush/${channelID}`,
        expirationTime: null,
        keys: { p256dh: b64url(ecdh.getPublicKey()), auth: b64url(auth) },
      },
    };
  }

  // ---- the daemon's side --------------------------------------------------

  async #onPost(req, res) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const channelID = decodeURIComponent(req.url.replace(/^\/wpush\//, ''));
    const record = { channelID, ttl: req.headers.ttl, urgency: req.headers.urgency, topic: req.headers.topic };
    const answer = (status, reason = '', headers = {}) => {
      this.requests.push({ ...record, status, reason });
      res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(reason);
      this.emit('request', { ...record, status, reason });
    };
    if (req.method !== 'POST' || !req.url.startsWith('/wpush/')) return answer(404, 'not a push endpoint');
    const channel = this.channels.get(channelID);
    if (!channel) return answer(410, 'no such subscription');
    if (req.headers.ttl === undefined || !/^\d+$/.test(req.headers.ttl)) return answer(400, 'TTL header missing');
    if (req.headers['content-encoding'] !== 'aes128gcm') return answer(415, 'Content-Encoding must be aes128gcm');
    let vapid;
    try {
      vapid = verifyVapid(req.headers.authorization, this.origin);
    } catch (error) {
      return answer(401, error.message);
    }
    if (channel.key && !channel.key.equals(vapid.key)) {
      return answer(403, 'the VAPID key is not the one the browser subscribed with');
    }
    if (channel.simulated) {
      let plaintext;
      try {
        plaintext = ece.decrypt(body, {
          version: 'aes128gcm',
          privateKey: channel.simulated.ecdh,
          authSecret: b64url(channel.simulated.auth),
        });
      } catch (error) {
        return answer(400, `the body does not decrypt: ${error.message}`);
      }
      const entry = { ...record, plaintext: plaintext.toString('utf8') };
      this.decrypted.push(entry);
      answer(201, '', { location: `${this.origin}/m/${randomUUID()}` });
      this.emit('decrypted', entry);
      return undefined;
    }
    const version = randomUUID();
    const notification = {
      messageType: 'notification',
      channelID,
      version,
      data: b64url(body),
      headers: { encoding: 'aes128gcm' },
    };
    const socket = this.sockets.get(channel.uaid);
    if (socket) {
      socket.send(JSON.stringify(notification));
    } else {
      this.pending.set(channel.uaid, [...(this.pending.get(channel.uaid) || []), notification]);
    }
    answer(201, '', { location: `${this.origin}/m/${version}` });
    return undefined;
  }

  /** Resolves with the first event `name` whose payload passes `test`, or rejects after `ms`. */
  waitFor(name, test, what, ms = 30000) {
    const promise = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off(name, listener);
        reject(new Error(`the push service saw no ${what} within ${ms / 1000} s`));
      }, ms);
      const listener = (event) => {
        if (!test(event)) return;
        clearTimeout(timer);
        this.off(name, listener);
        resolve(event);
      };
      this.on(name, listener);
    });
    // Awaited later by the caller: a rejection before then is not unhandled.
    promise.catch(() => {});
    return promise;
  }

  async stop() {
    for (const socket of this.ws.clients) socket.terminate();
    for (const session of this.sessions) session.destroy();
    this.ws.close();
    await Promise.all([
      new Promise((resolve) => this.http.close(resolve)),
      new Promise((resolve) => this.https.close(resolve)),
    ]);
  }
}
