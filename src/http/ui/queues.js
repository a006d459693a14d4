// Queues: the paged list (sorted and filtered by Warren, for 10,000 queues and more) and
// declaring one; one queue with its figures over time, arguments, effective policy, consumers
// and bindings, and what can be done to it: publish, get (with an ack mode), purge, delete.

import { get, put, post, del, apiPath } from './api.js';
import { h, fill, section, foldout, facts, keyValues, table, count, rate, route, badge, confirmed, flash, jsonText } from './dom.js';
import { form } from './forms.js';
import { pagedList, listState } from './list.js';
import { History, lineChart } from './chart.js';
import { features, vhostOptions, publishForm, bindingsTable, exchangeLabel } from './exchanges.js';
import { DEPTH_SERIES } from './overview.js';

const state = listState();

/** What the list asks of each queue (RabbitMQ's `columns`): less to send for a page of 500. */
const LIST_FIELDS = [
  'name',
  'vhost',
  'type',
  'durable',
  'auto_delete',
  'exclusive',
  'arguments',
  'policy',
  'state',
  'messages',
  'messages_ready',
  'messages_unacknowledged',
  'consumers',
  'message_stats.publish_details.rate',
  'message_stats.deliver_get_details.rate',
  'message_stats.ack_details.rate',
];

const rateOf = (q, key) => q.message_stats?.[`${key}_details`]?.rate ?? 0;

export function list(main) {
  const columns = [
    { label: 'Virtual host', value: (q) => q.vhost, sort: 'vhost' },
    { label: 'Name', value: (q) => h('a', { href: route('queues', q.vhost, q.name) }, q.name), sort: 'name' },
    { label: 'Type', value: (q) => q.type, sort: 'type' },
    { label: 'Features', value: features },
    { label: 'Policy', value: (q) => q.policy || '', sort: 'policy' },
    { label: 'Ready', class: 'num', value: (q) => count(q.messages_ready), sort: 'messages_ready' },
    { label: 'Unacked', class: 'num', value: (q) => count(q.messages_unacknowledged), sort: 'messages_unacknowledged' },
    { label: 'Total', class: 'num', value: (q) => count(q.messages), sort: 'messages' },
    { label: 'Consumers', class: 'num', value: (q) => count(q.consumers), sort: 'consumers' },
    { label: 'Incoming', class: 'num', value: (q) => rate(rateOf(q, 'publish')), sort: 'message_stats.publish_details.rate' },
    { label: 'Deliver / get', class: 'num', value: (q) => rate(rateOf(q, 'deliver_get')), sort: 'message_stats.deliver_get_details.rate' },
    { label: 'Ack', class: 'num', value: (q) => rate(rateOf(q, 'ack')), sort: 'message_stats.ack_details.rate' },
  ];
  const queues = pagedList({
    id: 'queues',
    noun: 'queues',
    endpoint: (vhost) => (vhost ? apiPath('queues', vhost) : '/api/queues'),
    columns,
    fields: LIST_FIELDS,
    state,
  });
  const add = form({
    id: 'add-queue',
    submit: 'Add queue',
    fields: [
      { name: 'vhost', label: 'Virtual host', type: 'select', options: [['/', '/']] },
      { name: 'name', label: 'Name', required: true },
      { name: 'type', label: 'Type', type: 'select', options: [['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']] },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto-delete', type: 'checkbox' },
      {
        name: 'arguments',
        label: 'Arguments (JSON)',
        type: 'json',
        placeholder: '{"x-max-length": 1000, "x-message-ttl": 60000, "x-dead-letter-exchange": "dlx"}',
        wide: true,
      },
    ],
    async onSubmit(v) {
      const args = { ...v.arguments };
      if (v.type !== 'classic') args['x-queue-type'] = v.type;
      await put(apiPath('queues', v.vhost, v.name), { durable: v.durable, auto_delete: v.auto_delete, arguments: args }, { report: false });
      queues.refresh();
      return `Queue ${v.name} declared.`;
    },
  });
  vhostOptions(add);
  main.append(
    h('h1', { text: 'Queues' }),
    section('All queues', h('p', { class: 'muted', text: 'Sorting by a figure uses the figures of the last sampling (every 5 seconds).' }), queues.el),
    foldout('Add a new queue', false, add.el),
  );
  return { refresh: queues.refresh };
}

// Each queue's figures over time, kept while the tab lives (the last few queues looked at).
const histories = new Map();
const KEPT_HISTORIES = 20;

function historyOf(key) {
  let history = histories.get(key);
  if (!history) {
    history = new History();
    histories.set(key, history);
    if (histories.size > KEPT_HISTORIES) histories.delete(histories.keys().next().value);
  }
  return history;
}

const RATE_SERIES = [
  { key: 'publish', label: 'Publish', color: '#2f6fb0' },
  { key: 'deliver_get', label: 'Deliver / get', color: '#2e8b57' },
  { key: 'ack', label: 'Consumer ack', color: '#d08a1f' },
  { key: 'redeliver', label: 'Redelivered', color: '#c0392b' },
];

const ACK_MODES = [
  ['ack_requeue_true', 'Nack message, requeue true'],
  ['ack_requeue_false', 'Automatic ack'],
  ['reject_requeue_true', 'Reject, requeue true'],
  ['reject_requeue_false', 'Reject, requeue false'],
];

/** One got message, as a card. */
function gotMessage(m, i) {
  const payload =
    m.payload_encoding === 'base64'
      ? h('div', {}, h('small', { class: 'muted', text: 'base64 (not UTF-8 text)' }), h('pre', { class: 'payload', text: m.payload }))
      : h('pre', { class: 'payload', text: m.payload });
  return h(
    'article',
    { class: 'message' },
    h('h3', { text: `Message ${i + 1}` }),
    facts([
      ['Exchange', exchangeLabel(m.exchange)],
      ['Routing key', m.routing_key],
      ['Redelivered', m.redelivered ? 'yes' : 'no'],
      ['Properties', keyValues(m.properties)],
      ['Payload', h('span', {}, `${count(m.payload_bytes)} bytes`, payload)],
      ['Remaining in the queue', count(m.message_count)],
    ]),
  );
}

export function one(main, vhost, name) {
  const path = apiPath('queues', vhost, name);
  const history = historyOf(`${vhost}\u0000${name}`);
  const details = h('div', { id: 'queue-details' });
  const figures = h('div', { id: 'queue-figures' });
  const depth = lineChart({ id: 'chart-queue-depth', title: 'Queued messages', series: DEPTH_SERIES, format: count, integer: true });
  const rates = lineChart({ id: 'chart-queue-rates', title: 'Message rates', series: RATE_SERIES, format: rate });
  const args = h('div', { id: 'queue-arguments' });
  const policy = h('div', { id: 'queue-policy' });
  const consumers = h('div', { id: 'queue-consumers' });
  const bindings = h('div', { id: 'queue-bindings' });
  const bindStatus = h('div', { class: 'status' });
  const got = h('div', { id: 'got-messages' });
  const actionStatus = h('div', { class: 'status', id: 'queue-action-status' });

  const bind = form({
    id: 'add-binding',
    submit: 'Bind',
    fields: [
      { name: 'source', label: 'From exchange', required: true, placeholder: 'amq.topic' },
      { name: 'routing_key', label: 'Routing key' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'json', placeholder: '{"x-match": "all"}', rows: 2 },
    ],
    async onSubmit(v) {
      await post(apiPath('bindings', vhost, 'e', v.source, 'q', name), { routing_key: v.routing_key, arguments: v.arguments }, { report: false });
      refresh();
      return 'Bound.';
    },
  });
  const publish = publishForm({ vhost, exchange: '', routingKey: name, onDone: () => refresh() });
  const getMessages = form({
    id: 'get-messages',
    submit: 'Get messages',
    fields: [
      { name: 'ackmode', label: 'Ack mode', type: 'select', options: ACK_MODES },
      { name: 'encoding', label: 'Encoding', type: 'select', options: [['auto', 'Auto string / base64'], ['base64', 'base64']] },
      { name: 'count', label: 'Messages', type: 'number', value: '1', min: 1 },
    ],
    async onSubmit(v) {
      const messages = await post(`${path}/get`, { count: v.count ?? 1, ackmode: v.ackmode, encoding: v.encoding, truncate: 50000 }, { report: false });
      fill(got, messages.length ? messages.map(gotMessage) : h('p', { class: 'muted', text: 'Queue is empty.' }));
      refresh();
      return messages.length ? `Got ${messages.length} message${messages.length === 1 ? '' : 's'}.` : 'Queue is empty.';
    },
  });

  async function purge() {
    if (!confirmed(`Purge every ready message of the queue ${name}?`)) return;
    try {
      await del(`${path}/contents`, { report: false });
      fill(actionStatus, h('span', { class: 'note ok', text: 'Queue purged.' }));
      refresh();
    } catch (e) {
      fill(actionStatus, h('span', { class: 'note bad', text: e.reason }));
    }
  }

  async function remove() {
    if (!confirmed(`Delete the queue ${name} and the messages in it?`)) return;
    try {
      await del(path, { report: false });
      flash(`Queue ${name} deleted.`);
      location.hash = '#/queues';
    } catch (e) {
      fill(actionStatus, h('span', { class: 'note bad', text: e.reason }));
    }
  }

  main.append(
    h(
      'div',
      { class: 'title-row' },
      h('h1', {}, 'Queue ', h('span', { class: 'object-name', text: name }), h('small', { text: ` in virtual host ${vhost}` })),
      h(
        'div',
        { class: 'buttons' },
        h('button', { type: 'button', id: 'purge-queue', onclick: purge }, 'Purge'),
        h('button', { type: 'button', id: 'delete-queue', class: 'danger', onclick: remove }, 'Delete'),
      ),
    ),
    actionStatus,
    h('div', { class: 'columns' }, section('Details', details), section('Messages', figures)),
    section('Last ten minutes', h('div', { class: 'charts' }, depth.el, rates.el)),
    h('div', { class: 'columns' }, section('Arguments', args), section('Effective policy', policy)),
    section('Consumers', consumers),
    section('Bindings', bindings, bindStatus, foldout('Add a binding to this queue', false, bind.el)),
    h('div', { class: 'columns' }, section('Publish a message', publish.el), section('Get messages', h('p', { class: 'muted', text: 'Getting a message with requeue puts it back, redelivered: at the head of a classic queue, at the back of a quorum queue.' }), getMessages.el, got)),
  );

  function show(q) {
    fill(
      details,
      facts([
        ['Type', q.type],
        ['Features', features(q)],
        ['State', q.state === 'running' ? badge('ok', 'running') : badge('warn', q.state)],
        ['Node', q.node],
        q.leader !== undefined && ['Leader', q.leader ?? h('span', { class: 'muted', text: 'none' })],
        q.members && ['Members', q.members.join(', ')],
        q.online && ['Online', q.online.join(', ')],
        ['Policy', q.policy || h('span', { class: 'muted', text: 'none' })],
        q.operator_policy && ['Operator policy', q.operator_policy],
        ['Consumers', count(q.consumers)],
      ]),
    );
    fill(
      figures,
      table({
        columns: [
          { label: '', value: (r) => r[0] },
          { label: 'Messages', class: 'num', value: (r) => h('span', { 'data-figure': r[3], text: count(r[1]) }) },
          { label: 'Change', class: 'num', value: (r) => rate(r[2]) },
        ],
        rows: [
          ['Ready', q.messages_ready, q.messages_ready_details?.rate, 'messages_ready'],
          ['Unacknowledged', q.messages_unacknowledged, q.messages_unacknowledged_details?.rate, 'messages_unacknowledged'],
          ['Total', q.messages, q.messages_details?.rate, 'messages'],
        ],
      }),
    );
    fill(args, keyValues(q.arguments));
    const effective = q.effective_policy_definition;
    fill(policy, effective && Object.keys(effective).length ? keyValues(effective) : h('span', { class: 'muted', text: 'No policy applies.' }));
    if (!history.points.length) {
      history.seed(q, { ready: 'messages_ready_details.samples', unacked: 'messages_unacknowledged_details.samples', total: 'messages_details.samples' });
      history.seed(q, { publish: 'message_stats.publish_details.samples', deliver_get: 'message_stats.deliver_get_details.samples', ack: 'message_stats.ack_details.samples' }, true);
    }
    history.add({
      ready: q.messages_ready,
      unacked: q.messages_unacknowledged,
      total: q.messages,
      publish: rateOf(q, 'publish'),
      deliver_get: rateOf(q, 'deliver_get'),
      ack: rateOf(q, 'ack'),
      redeliver: rateOf(q, 'redeliver'),
    });
    depth.update(history);
    rates.update(history);
  }

  function showConsumers(all) {
    const mine = all.filter((c) => c.queue?.name === name && c.queue?.vhost === vhost);
    fill(
      consumers,
      table({
        columns: [
          { label: 'Channel', value: (c) => c.channel_details?.name },
          { label: 'Consumer tag', value: (c) => c.consumer_tag },
          { label: 'Ack required', value: (c) => (c.ack_required ? 'yes' : 'no') },
          { label: 'Exclusive', value: (c) => (c.exclusive ? 'yes' : 'no') },
          { label: 'Prefetch', class: 'num', value: (c) => count(c.prefetch_count) },
          { label: 'Arguments', value: (c) => (Object.keys(c.arguments || {}).length ? jsonText(c.arguments) : '') },
        ],
        rows: mine,
        empty: 'No consumers.',
      }),
    );
  }

  async function refresh() {
    let q;
    try {
      q = await get(path, { report: false });
    } catch (e) {
      fill(details, h('p', { class: 'note bad', text: e.status === 404 ? `There is no queue ${name} in virtual host ${vhost}.` : e.reason }));
      return;
    }
    show(q);
    const [cs, bs] = await Promise.all([get(apiPath('consumers', vhost)).catch(() => null), get(`${path}/bindings`).catch(() => null)]);
    if (cs) showConsumers(cs);
    if (bs) fill(bindings, bindingsTable(bs, { showSource: true, onChange: refresh, status: bindStatus }));
  }
  return { refresh };
}
