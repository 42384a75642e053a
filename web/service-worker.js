// axion-push service worker: shows the notifications axion-push sends and
// opens their page when clicked.
//
// The payload is a Declarative Web Push message ({"web_push": 8030,
// "notification": {...}}); a plain {"title", "body", "url"} object, as older
// senders used, is read too.

self.addEventListener('push', (event) => {
  let message = {};
  if (event.data) {
    try {
      message = event.data.json();
    } catch (_) {
      message = { title: event.data.text() };
    }
  }
  const n = message.notification || message;
  const url = n.navigate || n.url || '/';
  const actionUrls = {};
  for (const a of n.actions || []) actionUrls[a.action] = a.navigate || a.url || url;
  const options = {
    body: n.body || '',
    icon: n.icon,
    badge: n.badge,
    image: n.image,
    tag: n.tag,
    // Browsers refuse renotify without a tag.
    renotify: Boolean(n.renotify && n.tag),
    requireInteraction: Boolean(n.require_interaction),
    silent: Boolean(n.silent),
    lang: n.lang,
    dir: n.dir || 'auto',
    timestamp: n.timestamp,
    actions: (n.actions || []).map((a) => ({ action: a.action, title: a.title, icon: a.icon })),
    data: { url, actionUrls, data: n.data },
  };
  // A push must always show something: browsers penalise silent pushes.
  event.waitUntil(self.registration.showNotification(n.title || 'New notification', options));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  const path = (event.action && data.actionUrls && data.actionUrls[event.action]) || data.url || '/';
  const target = new URL(path, self.location.origin).href;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const client of windows) {
        if (client.url === target && 'focus' in client) return client.focus();
      }
      return self.clients.openWindow(target);
    })(),
  );
});
