// The cluster's nodes: up or down as this node sees them, memory and disk against their limits,
// and the alarms those raise (publishers are blocked while one is on).

import { get } from './api.js';
import { h, fill, section, table, bytes, badge } from './dom.js';

/** A figure against its limit, as a bar: full past the limit. */
function gauge(used, limit, alarm, label) {
  if (typeof used !== 'number' || typeof limit !== 'number' || limit <= 0) return h('span', { class: 'muted', text: '–' });
  const bar = h('span', { class: `bar${alarm ? ' alarm' : ''}` });
  bar.style.width = `${Math.min(100, (used / limit) * 100).toFixed(1)}%`;
  return h(
    'div',
    { class: 'gauge' },
    h('span', { class: 'track', title: label }, bar),
    h('span', { text: label }),
  );
}

/** The nodes as a table (the overview shows it too). */
export function nodesTable(nodes) {
  return table({
    columns: [
      { label: 'Node', value: (n) => n.name },
      { label: 'State', value: (n) => (n.running ? badge('ok', 'up') : badge('bad', 'down')) },
      {
        label: 'Memory used / high watermark',
        value: (n) => gauge(n.mem_used, n.mem_limit, n.mem_alarm, `${bytes(n.mem_used)} of ${bytes(n.mem_limit)}`),
      },
      { label: 'Memory alarm', value: (n) => (n.running ? (n.mem_alarm ? badge('bad', 'ALARM') : badge('ok', 'ok')) : '–') },
      {
        label: 'Disk free / limit',
        value: (n) =>
          typeof n.disk_free === 'number'
            ? h('span', { text: `${bytes(n.disk_free)} free, limit ${bytes(n.disk_free_limit)}` })
            : h('span', { class: 'muted', text: '–' }),
      },
      { label: 'Disk alarm', value: (n) => (n.running ? (n.disk_free_alarm ? badge('bad', 'ALARM') : badge('ok', 'ok')) : '–') },
    ],
    rows: nodes,
    rowClass: (n) => (!n.running || n.mem_alarm || n.disk_free_alarm ? 'attention' : undefined),
    empty: 'No nodes.',
  });
}

export function page(main) {
  const holder = h('div', { id: 'nodes' });
  main.append(
    h('h1', { text: 'Nodes' }),
    section(
      'Nodes of the cluster',
      h('p', { class: 'muted', text: 'As this node sees them. A memory or disk alarm blocks publishers on every node until it clears.' }),
      holder,
    ),
  );
  return {
    async refresh() {
      fill(holder, nodesTable(await get('/api/nodes')));
    },
  };
}
