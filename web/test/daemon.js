// The real axion-push daemon for the browser tests: a temporary directory
// with its config.yaml and SQLite database (or a database the test names),
// the embedded broker on free loopback ports (MQTT and MQTT over WebSocket
// for the page), and the test push service allowed explicitly (its CA,
// loopback addresses).

import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { openSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import mqtt from 'mqtt';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const START_TIMEOUT_MS = 30000;

export function daemonBinary() {
  if (process.env.AXION_PUSH_BIN) return process.env.AXION_PUSH_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(REPO, 'target');
  return join(target, 'debug', 'axion-push');
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((done) => server.close(done));
  return port;
}

export class Daemon {
  /**
   * @param {string} dir the daemon's working directory
   * @param {string} caPath the push service's CA
   * @param {number} pushPort the push service's HTTPS port (endpoints must use an allowed port)
   * @param {{origins?: string[], tokenSecret?: string, databaseUrl?: string,
   *   vapidPrivateKey?: string, vapidPublicKey?: string, receiptClicks?: boolean}} [options] the web
   *   origins whose pages may open the WebSocket listener, a
   *   `subscribe_token_secret` (browsers then log in with a token), the
   *   database (default: SQLite in `dir`), `base.push`'s key pair as an
   *   installation's config.yaml has it (default: generated at first start),
   *   and whether click receipts are on (`receipts.clicks`)
   */
  static async start(
    dir,
    caPath,
    pushPort,
    { origins = [], tokenSecret, databaseUrl, vapidPrivateKey, vapidPublicKey, receiptClicks = false } = {},
  ) {
    const binary = daemonBinary();
    if (!existsSync(binary)) {
      throw new Error(`no axion-push binary at ${binary}: run \`cargo build\` or set AXION_PUSH_BIN`);
    }
    const daemon = new Daemon(dir, binary);
    daemon.requiresTokens = Boolean(tokenSecret);
    daemon.port = await freePort();
    daemon.wsPort = await freePort();
    daemon.configPath = join(dir, 'config.yaml');
    // A PEM key pasted into config.yaml as a block, as py_vapid users do.
    const key = [
      ...(vapidPrivateKey ? ['vapid_private_key: |', ...vapidPrivateKey.trim().split('\n').map((l) => `  ${l}`)] : []),
      ...(vapidPublicKey ? [`vapid_public_key: ${vapidPublicKey}`] : []),
    ].map((line) => `    ${line}\n`).join('');
    writeFileSync(
      daemon.configPath,
      `base:
  push:
${key}    vapid_email: mailto:tests@example.com
axion_push:
  mqtt:
    url: null
    client_id: axion-push-web-tests
  broker:
    listen: 127.0.0.1:${daemon.port}
    websocket_listen: 127.0.0.1:${daemon.wsPort}
    websocket_origins: ${JSON.stringify(origins)}
${tokenSecret ? `  subscribe_token_secret: ${tokenSecret}\n` : ''}  database:
    url: ${databaseUrl || `sqlite://${join(dir, 'axion-push.db')}`}
  vapid_key_file: ${join(dir, 'vapid.pem')}
  delivery:
    request_timeout: 5s
    shutdown_grace: 2s
    extra_root_ca: ${caPath}
  endpoints:
    allow_hosts: ["127.0.0.1"]
    allow_ports: [443, ${pushPort}]
    allow_private_addresses: true
  receipts:
    clicks: ${receiptClicks}
  log:
    level: info
`,
    );
    daemon.logPath = join(dir, 'daemon.log');
    const log = openSync(daemon.logPath, 'a');
    daemon.process = spawn(binary, ['serve', '--config', daemon.configPath], {
      cwd: dir,
      stdio: ['ignore', log, log],
    });
    daemon.exited = once(daemon.process, 'exit');
    await daemon.#waitOnline();
    return daemon;
  }

  constructor(dir, binary) {
    this.dir = dir;
    this.binary = binary;
  }

  get mqttUrl() {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get websocketUrl() {
    return `ws://127.0.0.1:${this.wsPort}`;
  }

  log() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  /**
   * Waits for the retained status `online` on the daemon's broker. Until the
   * broker's port opens, the client's connection attempts are refused and
   * it tries again.
   */
  #waitOnline() {
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(this.mqttUrl, { reconnectPeriod: 100, connectTimeout: 2000 });
      const finish = (error) => {
        clearTimeout(timer);
        this.process.off('exit', exited);
        client.end(true);
        if (error) reject(error);
        else resolve();
      };
      const exited = (code) => finish(new Error(`axion-push exited with ${code}:\n${this.log()}`));
      const timer = setTimeout(
        () => finish(new Error(`axion-push did not say online within ${START_TIMEOUT_MS / 1000} s:\n${this.log()}`)),
        START_TIMEOUT_MS,
      );
      this.process.once('exit', exited);
      client.on('error', () => {}); // refused while the broker starts: retried
      client.on('connect', () => client.subscribe('axion/push/daemon/status', { qos: 1 }));
      client.on('message', (_, payload) => {
        try {
          if (JSON.parse(payload.toString()).state === 'online') finish();
        } catch (_) {
          // an empty or foreign status: keep waiting
        }
      });
    });
  }

  /**
   * Publishes a command as a service would (`axion/{package}/push/{user}/{verb}`)
   * and resolves with the daemon's result report for it.
   */
  command(pkg, user, verb, payload) {
    const id = `web-test-${process.hrtime.bigint()}`;
    const base = `axion/${pkg}/push/${user}`;
    return new Promise((resolve, reject) => {
      const client = mqtt.connect(this.mqttUrl, { reconnectPeriod: 0 });
      const finish = (error, report) => {
        clearTimeout(timer);
        client.end(true);
        if (error) reject(error);
        else resolve(report);
      };
      const timer = setTimeout(() => finish(new Error(`no result for ${verb} ${id} within 30 s`)), 30000);
      client.on('error', finish);
      client.on('message', (_, raw) => {
        const report = JSON.parse(raw.toString());
        if (report.id === id && !(report.queued > 0)) finish(null, report);
      });
      client.on('connect', () =>
        client.subscribe(`${base}/result`, { qos: 1 }, () =>
          client.publish(`${base}/${verb}`, JSON.stringify({ ...payload, id }), { qos: 1 }),
        ),
      );
    });
  }

  /**
   * Listens for the next result report on `axion/{package}/push/{user}/result`
   * that passes `test`. Resolves, once listening, with `{report}`: a promise
   * of that report.
   */
  async nextResult(pkg, user, test, ms = 30000) {
    const client = mqtt.connect(this.mqttUrl, { reconnectPeriod: 0 });
    await once(client, 'connect');
    const topic = `axion/${pkg}/push/${user}/result`;
    const report = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        client.end(true);
        reject(new Error(`no matching result on ${topic} within ${ms / 1000} s`));
      }, ms);
      client.on('message', (_, raw) => {
        const value = JSON.parse(raw.toString());
        if (!test(value)) return;
        clearTimeout(timer);
        client.end(true);
        resolve(value);
      });
    });
    report.catch(() => {}); // awaited by the caller; see PushService.waitFor
    await client.subscribeAsync(topic, { qos: 1 });
    return { report };
  }

  /** The VAPID public key the daemon publishes (retained) on `axion/push/vapid`. */
  async vapidPublicKey() {
    const client = mqtt.connect(this.mqttUrl, { reconnectPeriod: 0 });
    try {
      await once(client, 'connect');
      const message = once(client, 'message', { signal: AbortSignal.timeout(30000) });
      await client.subscribeAsync('axion/push/vapid', { qos: 1 });
      const [, payload] = await message.catch(() => {
        throw new Error('the daemon published no retained axion/push/vapid within 30 s');
      });
      return JSON.parse(payload.toString()).public_key;
    } finally {
      client.end(true);
    }
  }

  /**
   * A subscribe token for `user` in `pkg`, as the host application issues
   * it (`axion-push subscribe-token`); undefined when the daemon requires
   * none.
   */
  async token(pkg, user) {
    if (!this.requiresTokens) return undefined;
    const { stdout } = await this.run('subscribe-token', user, '--package', pkg, '--valid', '1h');
    return stdout.trim();
  }

  /** Runs an axion-push subcommand against this daemon's config; resolves with its output. */
  async run(...args) {
    try {
      const { stdout, stderr } = await promisify(execFile)(this.binary, [...args, '--config', this.configPath], {
        cwd: this.dir,
        timeout: 60000,
      });
      return { stdout, stderr };
    } catch (error) {
      throw new Error(`axion-push ${args.join(' ')} failed (${error.code}):\n${error.stdout}\n${error.stderr}`);
    }
  }

  async stop() {
    if (!this.process || this.process.exitCode !== null) return;
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 15000);
    await this.exited;
    clearTimeout(timer);
  }
}
