// The demo page: subscribe this browser through axion-push.js over the
// embedded broker's WebSocket listener, and show what happens in words.
// Settings come from the form, prefilled from the last visit. A link may
// suggest others (?broker=ws://127.0.0.1:8083&package=demo&user=me); they
// are used only once the person agrees, since a subscription sent to a
// broker lets whoever runs it push to this browser.
import { AxionPush } from '/axion-push.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const remembered = readRemembered();
const defaults = {
  broker: `ws://${location.hostname || 'localhost'}:8083`,
  package: 'demo',
  user: 'me',
};
const LABELS = { broker: 'Broker', package: 'Package', user: 'User' };
for (const name of Object.keys(defaults)) {
  $(name).value = remembered[name] || defaults[name];
}

function readRemembered() {
  try {
    const saved = JSON.parse(localStorage.getItem('axion-push-demo') || '{}');
    return saved && typeof saved === 'object' ? saved : {};
  } catch (_) {
    return {};
  }
}

/** The link's settings that differ from the form's, as {name: value}. */
function suggestedSettings() {
  const suggested = {};
  for (const name of Object.keys(defaults)) {
    const value = params.get(name)?.trim();
    if (value && value !== $(name).value) suggested[name] = value;
  }
  return suggested;
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

/** `word` as one word of a POSIX shell command, whatever it contains. */
function shellWord(word) {
  return /^[\w.@%+=:,/-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}

function updateCommand() {
  const s = settings();
  $('command').textContent = `axion-push test-push ${shellWord(s.user)} --package ${shellWord(s.package)}`;
}

/** Shows the link's settings and waits for the person to take them or not. */
function askAboutSuggested() {
  const suggested = suggestedSettings();
  if (Object.keys(suggested).length === 0) return;
  const list = $('suggested-list');
  list.replaceChildren();
  for (const [name, value] of Object.entries(suggested)) {
    const term = document.createElement('dt');
    term.textContent = LABELS[name];
    const detail = document.createElement('dd');
    detail.textContent = value;
    list.append(term, detail);
  }
  const done = () => {
    $('suggested').hidden = true;
    history.replaceState(null, '', location.pathname);
  };
  $('use-suggested').addEventListener('click', () => {
    for (const [name, value] of Object.entries(suggested)) $(name).value = value;
    done();
    updateCommand();
    // Nothing is sent: the state under the new settings, then Subscribe.
    act('Checking this browser with these settings…', () => client().status());
  }, { once: true });
  $('keep-settings').addEventListener('click', done, { once: true });
  $('suggested').hidden = false;
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
askAboutSuggested();
act('Checking whether this browser can receive notifications…', () => client().resync());
