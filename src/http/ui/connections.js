// Connections and channels: the paged lists, one connection with its client's properties and its
// channels, and closing it (the client is told the reason given here).

import { get, del, apiPath } from './api.js';
import { h, fill, section, facts, keyValues, table, count, rate, bytes, route, when, badge, confirmed, flash } from './dom.js';
import { form } from './forms.js';
import { pagedList, listState } from './list.js';

const connectionState = listState();
const channelState = listState();

/** The client's product and version, from its properties. */
function client(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(' ') || '–';
}

function stateBadge(c) {
  return c.state === 'running' ? badge('ok', c.state) : badge('warn', c.state);
}

export function list(main) {
  const columns = [
    { label: 'Virtual host', value: (c) => c.vhost, sort: 'vhost' },
    {
      label: 'Name',
      value: (c) => h('span', {}, h('a', { href: route('connections', c.name) }, c.name), c.user_provided_name && h('small', { class: 'given-name', text: c.user_provided_name })),
      sort: 'name',
    },
    { label: 'User', value: (c) => c.user, sort: 'user' },
    { label: 'State', value: stateBadge, sort: 'state' },
    { label: 'Client', value: client },
    { label: 'TLS', value: (c) => (c.ssl ? 'yes' : 'no'), sort: 'ssl' },
    { label: 'Channels', class: 'num', value: (c) => count(c.channels), sort: 'channels' },
    { label: 'From client', class: 'num', value: (c) => `${bytes(c.recv_oct_details?.rate ?? 0)}/s`, sort: 'recv_oct_details.rate' },
    { label: 'To client', class: 'num', value: (c) => `${bytes(c.send_oct_details?.rate ?? 0)}/s`, sort: 'send_oct_details.rate' },
    { label: 'Connected', value: (c) => when(c.connected_at), sort: 'connected_at' },
  ];
  const connections = pagedList({
    id: 'connections',
    noun: 'connections',
    endpoint: (vhost) => (vhost ? apiPath('vhosts', vhost, 'connections') : '/api/connections'),
    columns,
    state: connectionState,
  });
  main.append(h('h1', { text: 'Connections' }), section('All connections', connections.el));
  return { refresh: connections.refresh };
}

export function channels(main) {
  const columns = [
    { label: 'Virtual host', value: (c) => c.vhost, sort: 'vhost' },
    { label: 'Channel', value: (c) => h('a', { href: route('connections', c.connection_details?.name ?? '') }, c.name), sort: 'name' },
    { label: 'User', value: (c) => c.user, sort: 'user' },
    { label: 'Mode', value: (c) => [c.confirm && 'confirm', c.transactional && 'transactional'].filter(Boolean).join(', ') },
    { label: 'Prefetch', class: 'num', value: (c) => count(c.prefetch_count), sort: 'prefetch_count' },
    { label: 'Unacked', class: 'num', value: (c) => count(c.messages_unacknowledged), sort: 'messages_unacknowledged' },
    { label: 'Consumers', class: 'num', value: (c) => count(c.consumer_count), sort: 'consumer_count' },
    { label: 'Publish', class: 'num', value: (c) => rate(c.message_stats?.publish_details?.rate ?? 0), sort: 'message_stats.publish_details.rate' },
    { label: 'Deliver / get', class: 'num', value: (c) => rate(c.message_stats?.deliver_get_details?.rate ?? 0), sort: 'message_stats.deliver_get_details.rate' },
    { label: 'Ack', class: 'num', value: (c) => rate(c.message_stats?.ack_details?.rate ?? 0), sort: 'message_stats.ack_details.rate' },
  ];
  const channelList = pagedList({
    id: 'channels',
    noun: 'channels',
    endpoint: (vhost) => (vhost ? apiPath('vhosts', vhost, 'channels') : '/api/channels'),
    columns,
    state: channelState,
  });
  main.append(h('h1', { text: 'Channels' }), section('All channels', channelList.el));
  return { refresh: channelList.refresh };
}

export function one(main, name) {
  const path = apiPath('connections', name);
  const details = h('div', { id: 'connection-details' });
  const props = h('div', { id: 'client-properties' });
  const chans = h('div', { id: 'connection-channels' });
  const givenName = h('p', { class: 'muted' });
  const close = form({
    id: 'close-connection',
    submit: 'Force close',
    className: 'inline',
    fields: [{ name: 'reason', label: 'Reason (the client is told)', value: 'Closed via management UI', wide: true }],
    async onSubmit(v) {
      if (!confirmed(`Close the connection ${name}?`)) return 'Not closed.';
      await del(path, { headers: { 'X-Reason': v.reason }, report: false });
      flash(`Connection ${name} closed: ${v.reason}`);
      location.hash = '#/connections';
      return 'Closed.';
    },
  });
  main.append(
    h('h1', {}, 'Connection ', h('span', { class: 'object-name', text: name })),
    givenName,
    h('div', { class: 'columns' }, section('Details', details), section('Client properties', props)),
    section('Channels', chans),
    section('Close this connection', close.el),
  );

  async function refresh() {
    let c;
    try {
      c = await get(path, { report: false });
    } catch (e) {
      fill(details, h('p', { class: 'note bad', text: e.status === 404 ? 'This connection is closed.' : e.reason }));
      return;
    }
    fill(
      details,
      facts([
        ['User', c.user],
        ['Virtual host', c.vhost],
        ['State', stateBadge(c)],
        ['Protocol', c.protocol],
        ['Client', `${c.peer_host}:${c.peer_port}`],
        ['Server', `${c.host}:${c.port}`],
        ['TLS', c.ssl ? 'yes' : 'no'],
        ['Authentication', c.auth_mechanism],
        ['Heartbeat', `${c.timeout} s`],
        ['Frame max', `${count(c.frame_max)} bytes`],
        ['Channel max', count(c.channel_max)],
        ['Connected', when(c.connected_at)],
        ['From client', `${bytes(c.recv_oct_details?.rate ?? 0)}/s (${bytes(c.recv_oct)} in all)`],
        ['To client', `${bytes(c.send_oct_details?.rate ?? 0)}/s (${bytes(c.send_oct)} in all)`],
      ]),
    );
    givenName.textContent = c.user_provided_name ? `Named by its client: ${c.user_provided_name}` : '';
    const p = { ...(c.client_properties || {}) };
    const capabilities = p.capabilities;
    delete p.capabilities;
    fill(props, keyValues(p), capabilities && h('details', {}, h('summary', { text: 'Capabilities' }), keyValues(capabilities)));
    const channelsOf = await get(`${path}/channels`);
    fill(
      chans,
      table({
        columns: [
          { label: 'Channel', value: (ch) => ch.name },
          { label: 'Mode', value: (ch) => [ch.confirm && 'confirm', ch.transactional && 'transactional'].filter(Boolean).join(', ') },
          { label: 'Prefetch', class: 'num', value: (ch) => count(ch.prefetch_count) },
          { label: 'Unacked', class: 'num', value: (ch) => count(ch.messages_unacknowledged) },
          { label: 'Consumers', class: 'num', value: (ch) => count(ch.consumer_count) },
          { label: 'Publish', class: 'num', value: (ch) => rate(ch.message_stats?.publish_details?.rate ?? 0) },
        ],
        rows: channelsOf,
        empty: 'No channels.',
      }),
    );
  }
  return { refresh };
}
