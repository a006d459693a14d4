// The overview: the broker's totals, charts of queued messages and message rates over the last
// ten minutes, the nodes' health and the listeners.

import { get, hasTag } from './api.js';
import { h, fill, section, count, rate, table } from './dom.js';
import { History, lineChart } from './chart.js';
import { nodesTable } from './nodes.js';

// Kept while the tab lives, so that the charts still show the minutes before a visit elsewhere.
const history = new History();

export const DEPTH_SERIES = [
  { key: 'ready', label: 'Ready', color: '#2f6fb0' },
  { key: 'unacked', label: 'Unacknowledged', color: '#d08a1f' },
  { key: 'total', label: 'Total', color: '#6b7785' },
];

const RATE_SERIES = [
  { key: 'publish', label: 'Publish', color: '#2f6fb0' },
  { key: 'confirm', label: 'Publisher confirm', color: '#7a4fb0' },
  { key: 'deliver_get', label: 'Deliver / get', color: '#2e8b57' },
  { key: 'ack', label: 'Consumer ack', color: '#d08a1f' },
  { key: 'unroutable', label: 'Unroutable', color: '#c0392b' },
];

function card(label, figure) {
  return h('div', { class: 'card' }, h('span', { class: 'figure', 'data-figure': figure, text: '–' }), h('span', { class: 'label', text: label }));
}

export function page(main) {
  const cards = [
    ['Connections', 'connections'],
    ['Channels', 'channels'],
    ['Exchanges', 'exchanges'],
    ['Queues', 'queues'],
    ['Consumers', 'consumers'],
    ['Ready', 'messages_ready'],
    ['Unacknowledged', 'messages_unacknowledged'],
    ['Total messages', 'messages'],
  ];
  const totals = h('div', { class: 'cards', id: 'totals' }, cards.map(([l, f]) => card(l, f)));
  const about = h('p', { class: 'muted', id: 'about' });
  const depth = lineChart({ id: 'chart-queued', title: 'Queued messages', series: DEPTH_SERIES, format: count, integer: true });
  const rates = lineChart({ id: 'chart-rates', title: 'Message rates', series: RATE_SERIES, format: rate });
  const seesNodes = hasTag('administrator', 'monitoring');
  const nodesBox = h('div', { id: 'overview-nodes' });
  const listeners = h('div', { id: 'listeners' });
  main.append(
    h('h1', { text: 'Overview' }),
    about,
    totals,
    section('Last ten minutes', h('div', { class: 'charts' }, depth.el, rates.el)),
    seesNodes && section('Nodes', nodesBox),
    section('Listeners', listeners),
  );

  function show(o) {
    const figures = { ...o.object_totals, ...o.queue_totals };
    for (const el of totals.querySelectorAll('[data-figure]')) {
      el.textContent = count(figures[el.dataset.figure]);
    }
    about.textContent = `${o.product_name} ${o.product_version} · cluster ${o.cluster_name} · this node ${o.node}`;
    const q = o.queue_totals || {};
    const m = o.message_stats || {};
    const r = (key) => m[`${key}_details`]?.rate ?? 0;
    if (!history.points.length) {
      history.seed(o, { ready: 'queue_totals.messages_ready_details.samples', unacked: 'queue_totals.messages_unacknowledged_details.samples', total: 'queue_totals.messages_details.samples' });
      history.seed(o, { publish: 'message_stats.publish_details.samples', deliver_get: 'message_stats.deliver_get_details.samples', ack: 'message_stats.ack_details.samples' }, true);
    }
    history.add({
      ready: q.messages_ready,
      unacked: q.messages_unacknowledged,
      total: q.messages,
      publish: r('publish'),
      confirm: r('confirm'),
      deliver_get: r('deliver_get'),
      ack: r('ack'),
      unroutable: r('drop_unroutable') + r('return_unroutable'),
    });
    depth.update(history);
    rates.update(history);
    fill(
      listeners,
      table({
        columns: [
          { label: 'Protocol', value: (l) => l.protocol },
          { label: 'Node', value: (l) => l.node },
          { label: 'Port', value: (l) => l.port },
        ],
        rows: o.listeners || [],
        empty: 'No listeners.',
      }),
    );
  }

  return {
    async refresh() {
      // Asked together; a failure of either shows in the error area, the other still shows.
      const nodes = seesNodes ? get('/api/nodes').catch(() => null) : null;
      show(await get('/api/overview'));
      const list = await nodes;
      if (list) fill(nodesBox, nodesTable(list));
    },
  };
}
