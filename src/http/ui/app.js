// The web UI's frame: logging in and out, the pages a user's tags allow (as the API allows
// them), routing on the location's hash (#/queues/%2F/orders), polling the page shown every
// 5 seconds, and the error area where any API failure a page does not show itself appears.

import { session, saveSession, clearSession, hasTag, get, basicAuth, onFailure, onLoggedOut } from './api.js';
import { h, fill, takeFlash } from './dom.js';
import { form } from './forms.js';
import * as overview from './overview.js';
import * as queues from './queues.js';
import * as exchanges from './exchanges.js';
import * as connections from './connections.js';
import * as admin from './admin.js';
import * as nodes from './nodes.js';

const POLL_MS = 5000;
const EVERYONE = null;
const ADMIN = ['administrator'];

/** The pages, in the navigation's order; `tags`: who sees them (EVERYONE: any management user). */
const PAGES = [
  { path: 'overview', label: 'Overview', tags: EVERYONE, show: overview.page },
  { path: 'connections', label: 'Connections', tags: EVERYONE, show: connections.list },
  { path: 'channels', label: 'Channels', tags: EVERYONE, show: connections.channels },
  { path: 'exchanges', label: 'Exchanges', tags: EVERYONE, show: exchanges.list },
  { path: 'queues', label: 'Queues', tags: EVERYONE, show: queues.list },
  { path: 'nodes', label: 'Nodes', tags: ['administrator', 'monitoring'], show: nodes.page },
  { path: 'users', label: 'Users', tags: ADMIN, show: admin.users },
  { path: 'vhosts', label: 'Virtual hosts', tags: ADMIN, show: admin.vhosts },
  { path: 'permissions', label: 'Permissions', tags: ADMIN, show: admin.permissions },
  { path: 'policies', label: 'Policies', tags: ['administrator', 'policymaker'], show: admin.policies },
];

/** Pages of one object: the list's path, how many parts name the object, who sees it. */
const DETAILS = {
  queues: { parts: 2, show: queues.one },
  exchanges: { parts: 2, show: exchanges.one },
  connections: { parts: 1, show: connections.one },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const errors = document.getElementById('errors');

// ---------------------------------------------------------------- errors

const shownErrors = new Map();

/** Shows an API failure at the top of the page (once per request and reason, with a count). */
function showError(e) {
  const key = `${e.method} ${e.path} ${e.status} ${e.reason}`;
  const known = shownErrors.get(key);
  if (known) {
    known.times += 1;
    known.count.textContent = ` (${known.times} times)`;
    return;
  }
  const countEl = h('span', { class: 'times' });
  const item = h(
    'div',
    { class: 'error' },
    h('strong', { text: e.status ? `Error ${e.status}: ` : 'Error: ' }),
    h('span', { class: 'reason', text: e.reason }),
    countEl,
    h('small', { text: ` (${e.method} ${decodeURIComponent(e.path)})` }),
    h('button', { type: 'button', class: 'link close', title: 'Dismiss', 'aria-label': 'Dismiss', onclick: () => dismiss(key) }, '×'),
  );
  shownErrors.set(key, { item, count: countEl, times: 1 });
  errors.append(item);
}

function dismiss(key) {
  shownErrors.get(key)?.item.remove();
  shownErrors.delete(key);
}

function clearErrors() {
  shownErrors.clear();
  errors.replaceChildren();
}

onFailure(showError);
onLoggedOut((e) => logout(`You are logged out: ${e.reason}`, 'bad'));

// ---------------------------------------------------------------- session

/** Back to the login form, with a note (`kind`: ok or bad). */
function logout(message, kind) {
  clearSession();
  stopPolling();
  clearErrors();
  showLogin(message, kind);
}

function showLogin(message, kind = 'bad') {
  nav.replaceChildren();
  who.replaceChildren();
  document.title = 'Warren: log in';
  const login = form({
    id: 'login',
    submit: 'Log in',
    fields: [
      { name: 'username', label: 'Username', required: true, autocomplete: 'username' },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password' },
    ],
    async onSubmit({ username, password }) {
      const auth = basicAuth(username, password);
      // The API's answer decides: wrong credentials are its "Login failed", a user without a
      // management tag its "Not management user".
      const me = await get('/api/whoami', { auth, report: false });
      saveSession({ name: me.name, tags: me.tags || [], auth });
      // A new hash renders the page (hashchange); the same one is rendered here.
      if (!location.hash || location.hash === '#/login') location.hash = '#/';
      else render();
      return 'Logged in.';
    },
  });
  fill(
    main,
    h(
      'div',
      { class: 'login' },
      h('h1', { text: 'Log in to Warren' }),
      h('p', { class: 'muted', text: 'With a user of the broker tagged management, policymaker, monitoring or administrator.' }),
      message && h('p', { class: `note ${kind}`, text: message }),
      login.el,
    ),
  );
  login.el.elements.namedItem('username').focus();
}

// ---------------------------------------------------------------- navigation and polling

function allowed(page) {
  return page.tags === EVERYONE || hasTag(...page.tags);
}

function drawFrame() {
  const s = session();
  const current = location.hash.split('/')[1] || 'overview';
  fill(
    nav,
    PAGES.filter(allowed).map((p) =>
      h('a', { href: `#/${p.path}`, class: p.path === current ? 'active' : undefined, 'aria-current': p.path === current ? 'page' : undefined }, p.label),
    ),
  );
  fill(
    who,
    h('span', { class: 'user', title: `Tags: ${s.tags.join(', ') || 'none'}` }, s.name),
    h('span', { class: 'tags', text: s.tags.join(', ') }),
    h('button', { type: 'button', class: 'small', id: 'logout', onclick: () => logout('Logged out.', 'ok') }, 'Log out'),
  );
}

let poller = null;

function stopPolling() {
  clearInterval(poller);
  poller = null;
}

function poll(refresh) {
  stopPolling();
  if (!refresh) return;
  // This page's own: a refresh of the page shown before, still waiting for its answers, does
  // not hold up this one's first.
  let refreshing = false;
  const tick = async () => {
    // A hidden tab, or this page's last refresh still waiting for its answers: a round skipped.
    if (document.hidden || refreshing) return;
    refreshing = true;
    try {
      await refresh();
    } catch {
      // Failures are shown where they happened (the error area or the page).
    } finally {
      refreshing = false;
    }
  };
  tick();
  poller = setInterval(tick, POLL_MS);
}

function notFound(text) {
  fill(main, h('section', { class: 'panel' }, h('h1', { text: 'Not here' }), h('p', { text })));
  return null;
}

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter((p, i) => p !== '' || i > 0);
  const [name = 'overview', ...rest] = parts;
  let decoded;
  try {
    decoded = rest.map(decodeURIComponent);
  } catch {
    return notFound('That address is not one of the UI’s.');
  }
  const page = PAGES.find((p) => p.path === name);
  if (!page) return notFound('That address is not one of the UI’s.');
  if (!allowed(page)) return notFound(`Your tags do not give you the ${page.label} page.`);
  document.title = `Warren: ${page.label}`;
  main.replaceChildren();
  if (!decoded.length) return page.show(main);
  const detail = DETAILS[name];
  if (!detail || decoded.length !== detail.parts) return notFound('That address is not one of the UI’s.');
  return detail.show(main, ...decoded);
}

function render() {
  if (!session()) {
    stopPolling();
    showLogin();
    return;
  }
  clearErrors();
  stopPolling();
  drawFrame();
  const note = takeFlash();
  const shown = route();
  if (note) main.prepend(h('p', { class: 'note ok flash', role: 'status', text: note }));
  poll(shown && shown.refresh);
  window.scrollTo(0, 0);
}

/** The user's tags as they are now (they may have changed since the tab logged in). */
async function checkTags() {
  const s = session();
  if (!s) return;
  try {
    const me = await get('/api/whoami');
    if (me.tags.join() !== s.tags.join()) {
      saveSession({ ...s, tags: me.tags });
      render();
    }
  } catch {
    // Shown (or logged out) by the API's failure handlers.
  }
}

window.addEventListener('hashchange', render);
render();
checkTags();
