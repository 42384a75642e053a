// The demo page: subscribe this browser through axion-push.js over the
// embedded broker's WebSocket listener, and show what happens in words.
// Settings come from the form, prefilled from the query string
// (?broker=ws://127.0.0.1:8083&package=demo&user=me) or the last visit.
import { AxionPush } from '/axion-push.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const remembered = JSON.parse(localStorage.getItem('axion-push-demo') || '{}');
const defaults = {
  broker: `ws://${location.hostname || 'localhost'}:8083`,
  package: 'demo',
  user: 'me',
};
for (const name of Object.keys(defaults)) {
  $(name).value = params.get(name) || remembered[name] || defaults[name];
}

function settings() {
  return { broker: $('broker').value.trim(), package: $('package').value.trim(), user: $('user').value.trim() };
}

/** The token field: a secret of the moment, never remembered or taken from the link. */
function token() {
  return $('token').value.trim() || undefined;
}

// One AxionPush per setting: each listens for the service worker's
// "subscription replaced" message and hands the new one over.
const clients = new Map();
function client() {
  const s = settings();
  localStorage.setItem('axion-push-demo', JSON.stringify(s));
  const key = JSON.stringify(s);
  if (!clients.has(key)) {
    clients.set(key, new AxionPush({ package: s.package, user: s.user, mqtt: { url: s.broker }, token, onchange: show }));
  }
  return clients.get(key);
}

const WORDS = {
  subscribed: (s) =>
    `Subscribed as “${s.user}” in “${s.package}”. Notifications will show here, even when this page is closed.`,
  unsubscribed: () => 'Not subscribed. Press Subscribe; the browser will ask whether this site may show notifications.',
};

function show(status) {
  const s = settings();
  $('state').dataset.state = status.state;
  $('state-text').textContent = (WORDS[status.state] || (() => status.message))(s);
  $('subscribe').disabled = status.state === 'unsupported' || status.state === 'blocked';
  $('subscribe').textContent = status.state === 'subscribed' ? 'Subscribe again' : 'Subscribe';
  $('unsubscribe').disabled = status.state !== 'subscribed';
  if (status.error) problem(status.error);
}

function problem(error) {
  $('problem').hidden = !error;
  $('problem').textContent = error ? error.message || String(error) : '';
}

function updateCommand() {
  const s = settings();
  const user = /^[\w.@-]+$/.test(s.user) ? s.user : `'${s.user.replace(/'/g, "'\\''")}'`;
  $('command').textContent = `axion-push test-push ${user} --package ${s.package}`;
}

async function act(working, action) {
  problem(null);
  $('state').dataset.state = 'working';
  $('state-text').textContent = working;
  $('subscribe').disabled = $('unsubscribe').disabled = true;
  try {
    show(await action());
  } catch (error) {
    problem(error);
    show(await client().status());
  }
}

$('subscribe').addEventListener('click', () => {
  if (!$('settings').reportValidity()) return;
  act('Subscribing… If the browser asks, choose “Allow”.', () => client().subscribe());
});
$('unsubscribe').addEventListener('click', () => act('Unsubscribing…', () => client().unsubscribe()));
$('settings').addEventListener('input', updateCommand);
$('copy').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText($('command').textContent);
    $('copy').textContent = 'Copied';
  } catch (_) {
    $('copy').textContent = 'Select the command and copy it';
  }
});

navigator.serviceWorker?.addEventListener('message', (event) => {
  const message = event.data || {};
  if (message.type !== 'axion-push:push') return;
  const received = $('received');
  received.replaceChildren();
  const title = document.createElement('strong');
  title.textContent = message.title;
  received.append(title, document.createTextNode(message.body || ''));
  received.append(document.createElement('br'));
  const when = document.createElement('small');
  when.textContent = `received at ${new Date().toLocaleTimeString()}`;
  received.append(when);
});

updateCommand();
act('Checking whether this browser can receive notifications…', () => client().resync());
