// Administration: users (with their tags), virtual hosts, permissions and policies, each a list
// with a form that adds or updates one and buttons that delete one.

import { get, put, del, apiPath } from './api.js';
import { h, fill, section, table, keyValues, count, rate, confirmed, say } from './dom.js';
import { form } from './forms.js';
import { vhostNames } from './list.js';

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

/** A Delete button for a row: asks, deletes, says how it went in `status`, then `after()`. */
function deleteButton(what, path, status, after) {
  return h(
    'button',
    {
      type: 'button',
      class: 'small danger',
      onclick: async () => {
        if (!confirmed(`Delete ${what}?`)) return;
        try {
          await del(path, { report: false });
          say(status, 'ok', `Deleted ${what}.`);
          after();
        } catch (e) {
          say(status, 'bad', e.reason);
        }
      },
    },
    'Delete',
  );
}

/** Fills a form's vhost select. */
async function vhostSelect(f, field = 'vhost') {
  const names = await vhostNames();
  if (names) f.options(field, names.map((n) => [n, n]));
}

// ---------------------------------------------------------------- users

export function users(main) {
  const holder = h('div', { id: 'users' });
  const status = h('div', { class: 'status' });
  let known = [];
  const edit = form({
    id: 'add-user',
    submit: 'Add / update user',
    fields: [
      { name: 'name', label: 'Username', required: true },
      { name: 'password', label: 'Password', type: 'password', autocomplete: 'new-password', help: 'Leave empty to keep an existing user’s password (a new user then has none and cannot log in with one).' },
      { name: 'tags', label: 'Tags (comma separated)', help: `Known tags: ${TAGS.join(', ')}.` },
    ],
    async onSubmit(v) {
      const body = { tags: v.tags.split(',').map((t) => t.trim()).filter(Boolean).join(',') };
      const existing = known.find((u) => u.name === v.name);
      if (v.password) body.password = v.password;
      else if (existing) {
        body.password_hash = existing.password_hash;
        body.hashing_algorithm = existing.hashing_algorithm;
      }
      await put(apiPath('users', v.name), body, { report: false });
      edit.set('password', '');
      refresh();
      return existing ? `User ${v.name} updated.` : `User ${v.name} added.`;
    },
  });
  const tagButtons = h(
    'div',
    { class: 'tag-buttons' },
    'Add a tag: ',
    TAGS.map((t) =>
      h(
        'button',
        {
          type: 'button',
          class: 'small',
          onclick: () => {
            const input = edit.el.elements.namedItem('tags');
            const tags = input.value.split(',').map((x) => x.trim()).filter(Boolean);
            if (!tags.includes(t)) tags.push(t);
            input.value = tags.join(', ');
          },
        },
        t,
      ),
    ),
  );
  main.append(h('h1', { text: 'Users' }), section('Users', holder, status), section('Add or update a user', edit.el, tagButtons));

  async function refresh() {
    const [list, permissions] = await Promise.all([get('/api/users'), get('/api/permissions')]);
    known = list;
    fill(
      holder,
      table({
        columns: [
          {
            label: 'Name',
            value: (u) =>
              h(
                'button',
                {
                  type: 'button',
                  class: 'link',
                  title: 'Edit this user',
                  onclick: () => {
                    edit.set('name', u.name);
                    edit.set('tags', u.tags.join(', '));
                    edit.el.elements.namedItem('password').focus();
                  },
                },
                u.name,
              ),
          },
          { label: 'Tags', value: (u) => u.tags.join(', ') },
          {
            label: 'Can access virtual hosts',
            value: (u) => permissions.filter((p) => p.user === u.name).map((p) => p.vhost).join(', ') || h('span', { class: 'muted', text: 'none' }),
          },
          { label: 'Has password', value: (u) => (u.password_hash ? 'yes' : 'no') },
          { label: '', value: (u) => deleteButton(`the user ${u.name}`, apiPath('users', u.name), status, refresh) },
        ],
        rows: list,
        empty: 'No users.',
      }),
    );
  }
  return { refresh };
}

// ---------------------------------------------------------------- vhosts

export function vhosts(main) {
  const holder = h('div', { id: 'vhosts' });
  const status = h('div', { class: 'status' });
  const add = form({
    id: 'add-vhost',
    submit: 'Add / update virtual host',
    fields: [
      { name: 'name', label: 'Name', required: true },
      { name: 'description', label: 'Description' },
      { name: 'tags', label: 'Tags (comma separated)' },
      { name: 'defaultqueuetype', label: 'Default queue type', type: 'select', options: [['', 'Undefined (classic)'], ['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']] },
    ],
    async onSubmit(v) {
      const body = { description: v.description, tags: v.tags };
      if (v.defaultqueuetype) body.defaultqueuetype = v.defaultqueuetype;
      await put(apiPath('vhosts', v.name), body, { report: false });
      refresh();
      return `Virtual host ${v.name} saved.`;
    },
  });
  main.append(h('h1', { text: 'Virtual hosts' }), section('Virtual hosts', holder, status), section('Add or update a virtual host', add.el));

  async function refresh() {
    const list = await get('/api/vhosts');
    fill(
      holder,
      table({
        columns: [
          { label: 'Name', value: (v) => v.name },
          { label: 'Description', value: (v) => v.description || '' },
          { label: 'Tags', value: (v) => (v.tags || []).join(', ') },
          { label: 'Default queue type', value: (v) => v.default_queue_type },
          { label: 'Ready', class: 'num', value: (v) => count(v.messages_ready) },
          { label: 'Unacked', class: 'num', value: (v) => count(v.messages_unacknowledged) },
          { label: 'Total', class: 'num', value: (v) => count(v.messages) },
          { label: 'Publish', class: 'num', value: (v) => rate(v.message_stats?.publish_details?.rate ?? 0) },
          { label: '', value: (v) => deleteButton(`the virtual host ${v.name} and everything in it`, apiPath('vhosts', v.name), status, refresh) },
        ],
        rows: list,
        empty: 'No virtual hosts.',
      }),
    );
  }
  return { refresh };
}

// ---------------------------------------------------------------- permissions

export function permissions(main) {
  const holder = h('div', { id: 'permissions' });
  const status = h('div', { class: 'status' });
  const set = form({
    id: 'set-permission',
    submit: 'Set permission',
    fields: [
      { name: 'user', label: 'User', type: 'select', options: [] },
      { name: 'vhost', label: 'Virtual host', type: 'select', options: [['/', '/']] },
      { name: 'configure', label: 'Configure regexp', value: '.*' },
      { name: 'write', label: 'Write regexp', value: '.*' },
      { name: 'read', label: 'Read regexp', value: '.*' },
    ],
    async onSubmit(v) {
      if (!v.user) throw new Error('Choose a user.');
      await put(apiPath('permissions', v.vhost, v.user), { configure: v.configure, write: v.write, read: v.read }, { report: false });
      refresh();
      return `Permission of ${v.user} in ${v.vhost} set.`;
    },
  });
  vhostSelect(set);
  main.append(h('h1', { text: 'Permissions' }), section('Permissions', holder, status), section('Set a permission', set.el));

  async function refresh() {
    const [list, users_] = await Promise.all([get('/api/permissions'), get('/api/users')]);
    set.options('user', users_.map((u) => [u.name, u.name]));
    fill(
      holder,
      table({
        columns: [
          { label: 'User', value: (p) => p.user },
          { label: 'Virtual host', value: (p) => p.vhost },
          { label: 'Configure', value: (p) => h('code', { text: p.configure }) },
          { label: 'Write', value: (p) => h('code', { text: p.write }) },
          { label: 'Read', value: (p) => h('code', { text: p.read }) },
          { label: '', value: (p) => deleteButton(`the permission of ${p.user} in ${p.vhost}`, apiPath('permissions', p.vhost, p.user), status, refresh) },
        ],
        rows: list,
        empty: 'No permissions.',
      }),
    );
  }
  return { refresh };
}

// ---------------------------------------------------------------- policies

export function policies(main) {
  const holder = h('div', { id: 'policies' });
  const status = h('div', { class: 'status' });
  const edit = form({
    id: 'add-policy',
    submit: 'Add / update policy',
    fields: [
      { name: 'vhost', label: 'Virtual host', type: 'select', options: [['/', '/']] },
      { name: 'name', label: 'Name', required: true },
      { name: 'pattern', label: 'Pattern (regexp on names)', required: true, placeholder: '^orders\\.' },
      { name: 'apply_to', label: 'Apply to', type: 'select', options: [['all', 'Exchanges and queues'], ['queues', 'Queues'], ['exchanges', 'Exchanges']] },
      { name: 'priority', label: 'Priority', type: 'number', value: '0' },
      {
        name: 'definition',
        label: 'Definition (JSON)',
        type: 'json',
        rows: 3,
        wide: true,
        placeholder: '{"max-length": 1000, "message-ttl": 60000, "dead-letter-exchange": "dlx"}',
        help: 'Keys as in RabbitMQ: max-length, max-length-bytes, overflow, message-ttl, expires, dead-letter-exchange, dead-letter-routing-key, queue-mode, alternate-exchange, …',
      },
    ],
    async onSubmit(v) {
      await put(apiPath('policies', v.vhost, v.name), { pattern: v.pattern, definition: v.definition, priority: v.priority ?? 0, 'apply-to': v.apply_to }, { report: false });
      refresh();
      return `Policy ${v.name} saved.`;
    },
  });
  vhostSelect(edit);
  main.append(h('h1', { text: 'Policies' }), section('Policies', holder, status), section('Add or update a policy', edit.el));

  function editPolicy(p) {
    edit.set('vhost', p.vhost);
    edit.set('name', p.name);
    edit.set('pattern', p.pattern);
    edit.set('apply_to', p['apply-to']);
    edit.set('priority', String(p.priority));
    edit.set('definition', JSON.stringify(p.definition, null, 1));
    edit.el.scrollIntoView({ block: 'nearest' });
  }

  async function refresh() {
    const list = await get('/api/policies');
    fill(
      holder,
      table({
        columns: [
          { label: 'Virtual host', value: (p) => p.vhost },
          { label: 'Name', value: (p) => p.name },
          { label: 'Pattern', value: (p) => h('code', { text: p.pattern }) },
          { label: 'Apply to', value: (p) => p['apply-to'] },
          { label: 'Definition', value: (p) => keyValues(p.definition) },
          { label: 'Priority', class: 'num', value: (p) => p.priority },
          {
            label: '',
            value: (p) =>
              h(
                'span',
                { class: 'buttons' },
                h('button', { type: 'button', class: 'small', onclick: () => editPolicy(p) }, 'Edit'),
                deleteButton(`the policy ${p.name}`, apiPath('policies', p.vhost, p.name), status, refresh),
              ),
          },
        ],
        rows: list,
        empty: 'No policies.',
      }),
    );
  }
  return { refresh };
}
