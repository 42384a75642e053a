// Serves web/ on loopback, as the README's `python3 -m http.server` does:
// the service worker at /service-worker.js (scope /), the demo under /demo/,
// and mqtt.js under /node_modules/.

import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const WEB_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/**
 * `routes` maps "METHOD /path" to a handler `(body, req) => {status, json?}`
 * for the host app's own endpoints (a relay backend, say), `{status, html}`
 * for a page the host app renders, or `{status, file}` for a file of the
 * disk served at another path (a site's own layout).
 */
export async function serveWeb(routes = {}) {
  const server = http.createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const route = routes[`${req.method} ${path}`];
    if (route) {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      try {
        const { status, json, html, file } = await route(Buffer.concat(chunks).toString('utf8'), req);
        if (file !== undefined) {
          const type = TYPES[extname(file)] || 'application/octet-stream';
          res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(await readFile(file));
          return undefined;
        }
        if (html !== undefined) {
          res.writeHead(status, { 'content-type': TYPES['.html'], 'cache-control': 'no-store' }).end(html);
          return undefined;
        }
        res.writeHead(status, { 'content-type': 'application/json' }).end(json === undefined ? '' : JSON.stringify(json));
      } catch (error) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String(error));
      }
      return undefined;
    }
    let file = normalize(join(WEB_ROOT, path));
    if (!file.startsWith(WEB_ROOT + sep) && file !== WEB_ROOT) return res.writeHead(403).end();
    if (path.endsWith('/')) file = join(file, 'index.html');
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    } catch (_) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  server.origin = `http://127.0.0.1:${server.address().port}`;
  server.stop = () => {
    server.closeAllConnections();
    return new Promise((done) => server.close(done));
  };
  return server;
}
