// Exchanges: the paged list (and declaring one), one exchange with its bindings, and publishing
// a message, here and from a queue's page (to the default exchange).

import { get, put, post, del, apiPath } from './api.js';
import { h, fill, section, foldout, facts, keyValues, table, rate, route, confirmed, flash } from './dom.js';
import { form } from './forms.js';
import { pagedList, listState, vhostNames } from './list.js';

const state = listState();

/** RabbitMQ's name for the default exchange in paths (its own name is empty). */
export function exchangePathName(name) {
  return name === '' ? 'amq.default' : name;
}

export function exchangeLabel(name) {
  return name === '' ? '(AMQP default)' : name;
}

/** Short flags for an object's features, with what they mean on hover. */
export function features(o) {
  const f = [];
  if (o.durable) f.push(['D', 'durable']);
  if (o.auto_delete) f.push(['AD', 'auto-delete']);
  if (o.exclusive) f.push(['Excl', 'exclusive']);
  if (o.internal) f.push(['I', 'internal']);
  const args = Object.keys(o.arguments || {});
  if (args.length) f.push(['Args', args.join(', ')]);
  return h('span', { class: 'features' }, f.map(([short, long]) => h('abbr', { title: long, text: short })));
}

/** A vhost select filled once the vhosts are known. */
export function vhostOptions(formApi, field = 'vhost') {
  vhostNames().then((names) => {
    if (names) formApi.options(field, names.map((n) => [n, n]));
  });
}

export function list(main) {
  const columns = [
    { label: 'Virtual host', value: (e) => e.vhost, sort: 'vhost' },
    { label: 'Name', value: (e) => h('a', { href: route('exchanges', e.vhost, exchangePathName(e.name)) }, exchangeLabel(e.name)), sort: 'name' },
    { label: 'Type', value: (e) => e.type, sort: 'type' },
    { label: 'Features', value: features },
    { label: 'Policy', value: (e) => e.policy || '', sort: 'policy' },
    { label: 'Rate in', class: 'num', value: (e) => rate(e.message_stats?.publish_in_details?.rate ?? 0), sort: 'message_stats.publish_in_details.rate' },
    { label: 'Rate out', class: 'num', value: (e) => rate(e.message_stats?.publish_out_details?.rate ?? 0), sort: 'message_stats.publish_out_details.rate' },
  ];
  const exchanges = pagedList({
    id: 'exchanges',
    noun: 'exchanges',
    endpoint: (vhost) => (vhost ? apiPath('exchanges', vhost) : '/api/exchanges'),
    columns,
    fields: ['name', 'vhost', 'type', 'durable', 'auto_delete', 'internal', 'arguments', 'policy', 'message_stats'],
    state,
  });
  const add = form({
    id: 'add-exchange',
    submit: 'Add exchange',
    fields: [
      { name: 'vhost', label: 'Virtual host', type: 'select', options: [['/', '/']] },
      { name: 'name', label: 'Name', required: true },
      {
        name: 'type',
        label: 'Type',
        type: 'select',
        options: [['direct'], ['fanout'], ['topic'], ['headers'], ['x-consistent-hash']],
      },
      { name: 'durable', label: 'Durable', type: 'checkbox', value: true },
      { name: 'auto_delete', label: 'Auto-delete', type: 'checkbox' },
      { name: 'internal', label: 'Internal', type: 'checkbox' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'json', placeholder: '{"alternate-exchange": "unrouted"}', wide: true },
    ],
    async onSubmit(v) {
      await put(apiPath('exchanges', v.vhost, v.name), { type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: v.arguments }, { report: false });
      exchanges.refresh();
      return `Exchange ${v.name} declared.`;
    },
  });
  vhostOptions(add);
  main.append(h('h1', { text: 'Exchanges' }), section('All exchanges', exchanges.el), foldout('Add a new exchange', false, add.el));
  return { refresh: exchanges.refresh };
}

/**
 * Publishing a message: to `exchange` with a routing key typed in, or (a queue's page) to the
 * default exchange with the queue's name as routing key; `onDone` once published.
 */
export function publishForm({ vhost, exchange, routingKey, onDone = () => {} }) {
  const fields = [];
  if (routingKey === undefined) fields.push({ name: 'routing_key', label: 'Routing key' });
  fields.push(
    { name: 'delivery_mode', label: 'Delivery mode', type: 'select', options: [['1', '1 – non-persistent'], ['2', '2 – persistent']] },
    { name: 'headers', label: 'Headers (JSON)', type: 'json', placeholder: '{"x-origin": "ui"}', rows: 2 },
    { name: 'properties', label: 'Properties (JSON)', type: 'json', placeholder: '{"content_type": "text/plain", "priority": 1}', rows: 2 },
    { name: 'payload', label: 'Payload', type: 'textarea', rows: 4, wide: true },
  );
  return form({
    id: 'publish-message',
    submit: 'Publish message',
    fields,
    async onSubmit(v) {
      const properties = { ...v.properties, delivery_mode: Number(v.delivery_mode) };
      if (Object.keys(v.headers).length) properties.headers = v.headers;
      const answer = await post(
        `${apiPath('exchanges', vhost, exchangePathName(exchange))}/publish`,
        { properties, routing_key: routingKey ?? v.routing_key, payload: v.payload, payload_encoding: 'string' },
        { report: false },
      );
      onDone();
      return answer?.routed ? 'Message published.' : 'Message published, but not routed.';
    },
  });
}

/** A binding's destination, linked. */
function destination(b) {
  const kind = b.destination_type === 'queue' ? 'queues' : 'exchanges';
  return h('a', { href: route(kind, b.vhost, b.destination_type === 'queue' ? b.destination : exchangePathName(b.destination)) }, b.destination);
}

/**
 * Bindings as a table, each with an Unbind button (not the default exchange's, which cannot be
 * removed); `onChange` after one is removed.
 */
export function bindingsTable(bindings, { showSource, showDestination, onChange, status }) {
  const columns = [];
  if (showSource) {
    columns.push({ label: 'From', value: (b) => (b.source === '' ? h('span', { class: 'muted', text: '(default exchange binding)' }) : h('a', { href: route('exchanges', b.vhost, b.source) }, b.source)) });
  }
  if (showDestination) {
    columns.push({ label: 'To', value: destination }, { label: 'Kind', value: (b) => b.destination_type });
  }
  columns.push(
    { label: 'Routing key', value: (b) => b.routing_key },
    { label: 'Arguments', value: (b) => keyValues(b.arguments, '') },
    {
      label: '',
      value: (b) =>
        b.source === ''
          ? ''
          : h(
              'button',
              {
                type: 'button',
                class: 'small danger',
                onclick: async () => {
                  const kind = b.destination_type === 'queue' ? 'q' : 'e';
                  try {
                    await del(`${apiPath('bindings', b.vhost, 'e', b.source, kind, b.destination, b.properties_key)}`, { report: false });
                    fill(status, h('span', { class: 'note ok', text: 'Unbound.' }));
                    onChange();
                  } catch (e) {
                    fill(status, h('span', { class: 'note bad', text: e.reason }));
                  }
                },
              },
              'Unbind',
            ),
    },
  );
  return table({ columns, rows: bindings, empty: 'No bindings.' });
}

export function one(main, vhost, pathName) {
  const name = pathName === 'amq.default' ? '' : pathName;
  const path = apiPath('exchanges', vhost, exchangePathName(name));
  const details = h('div', { id: 'exchange-details' });
  const outgoing = h('div', { id: 'exchange-bindings' });
  const incoming = h('div');
  const bindStatus = h('div', { class: 'status' });
  const bind = form({
    id: 'add-binding',
    submit: 'Bind',
    fields: [
      { name: 'kind', label: 'To', type: 'select', options: [['q', 'Queue'], ['e', 'Exchange']] },
      { name: 'destination', label: 'Name', required: true },
      { name: 'routing_key', label: 'Routing key' },
      { name: 'arguments', label: 'Arguments (JSON)', type: 'json', placeholder: '{"x-match": "all"}', rows: 2 },
    ],
    async onSubmit(v) {
      await post(apiPath('bindings', vhost, 'e', name, v.kind, v.destination), { routing_key: v.routing_key, arguments: v.arguments }, { report: false });
      refresh();
      return 'Bound.';
    },
  });
  const publish = publishForm({ vhost, exchange: name });
  const deleteStatus = h('div', { class: 'status' });
  const builtIn = name === '' || name.startsWith('amq.');
  main.append(
    h('h1', {}, 'Exchange ', h('span', { class: 'object-name', text: exchangeLabel(name) }), h('small', { text: ` in virtual host ${vhost}` })),
    section('Details', details),
    section('Bindings from this exchange', outgoing, bindStatus, name === '' ? null : foldout('Add a binding from this exchange', false, bind.el)),
    section('Bindings to this exchange', incoming),
    section('Publish a message', publish.el),
    !builtIn &&
      section(
        'Delete this exchange',
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            id: 'delete-exchange',
            onclick: async () => {
              if (!confirmed(`Delete the exchange ${name}?`)) return;
              try {
                await del(path, { report: false });
                flash(`Exchange ${name} deleted.`);
                location.hash = '#/exchanges';
              } catch (e) {
                fill(deleteStatus, h('span', { class: 'note bad', text: e.reason }));
              }
            },
          },
          'Delete',
        ),
        deleteStatus,
      ),
  );

  async function refresh() {
    const [e, from, to] = await Promise.all([get(path), get(`${path}/bindings/source`), get(`${path}/bindings/destination`)]);
    fill(
      details,
      facts([
        ['Type', e.type],
        ['Features', features(e)],
        ['Policy', e.policy || h('span', { class: 'muted', text: 'none' })],
        ['Arguments', keyValues(e.arguments)],
        ['Rate in', rate(e.message_stats?.publish_in_details?.rate ?? 0)],
        ['Rate out', rate(e.message_stats?.publish_out_details?.rate ?? 0)],
      ]),
    );
    fill(outgoing, bindingsTable(from, { showDestination: true, onChange: refresh, status: bindStatus }));
    fill(incoming, bindingsTable(to, { showSource: true, onChange: refresh, status: bindStatus }));
  }
  return { refresh };
}

