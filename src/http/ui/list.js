// A list of the API's (queues, exchanges, connections, channels), paged, filtered and sorted by
// Warren (RabbitMQ's page, page_size, name, use_regex, sort, sort_reverse and columns), so that
// the page holds one page of 10,000 queues, never all of them.

import { get, query, ApiError } from './api.js';
import { h, fill, table, count } from './dom.js';

const PAGE_SIZES = [20, 50, 100, 500];

/** What a list shows; kept by the page's module, so that coming back finds it as it was. */
export function listState(sort = '') {
  return { vhost: '', name: '', regex: false, page: 1, pageSize: 50, sort, reverse: false };
}

/** The vhosts the user sees, for the vhost filters (null when the API refused). */
export async function vhostNames() {
  try {
    const vhosts = await get('/api/vhosts');
    return vhosts.map((v) => v.name);
  } catch {
    return null;
  }
}

/**
 * A paged list. `endpoint(vhost)`: the API's path of the list (of one vhost when given);
 * `columns`: as dom.table's; `fields`: the API columns the rows need; `noun`: what it lists.
 */
export function pagedList({ id, noun, endpoint, columns, fields, state, vhostFilter = true }) {
  const filter = h('input', {
    type: 'search',
    name: 'filter',
    placeholder: `Filter ${noun} by name`,
    value: state.name,
    'aria-label': `Filter ${noun} by name`,
  });
  const regex = h('input', { type: 'checkbox', name: 'regex', checked: state.regex });
  const vhost = h('select', { name: 'vhost', 'aria-label': 'Virtual host' }, h('option', { value: '' }, 'All virtual hosts'));
  const size = h(
    'select',
    { name: 'page_size', 'aria-label': 'Items per page' },
    PAGE_SIZES.map((n) => h('option', { value: n, selected: n === state.pageSize }, `${n} per page`)),
  );
  const summary = h('span', { class: 'summary', role: 'status' });
  const pager = h('div', { class: 'pager' });
  const holder = h('div', { class: 'table-holder' });
  const el = h(
    'div',
    { class: 'paged', id },
    h(
      'div',
      { class: 'toolbar' },
      vhostFilter && vhost,
      filter,
      h('label', { class: 'check' }, regex, ' Regex'),
      size,
      summary,
    ),
    holder,
    pager,
  );

  if (vhostFilter) {
    vhostNames().then((names) => {
      for (const name of names || []) vhost.append(h('option', { value: name, selected: name === state.vhost }, name));
    });
  }

  let typing;
  filter.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.name = filter.value;
      state.page = 1;
      load();
    }, 250);
  });
  regex.addEventListener('change', () => {
    state.regex = regex.checked;
    state.page = 1;
    load();
  });
  vhost.addEventListener('change', () => {
    state.vhost = vhost.value;
    state.page = 1;
    load();
  });
  size.addEventListener('change', () => {
    state.pageSize = Number(size.value);
    state.page = 1;
    load();
  });

  function onSort(key) {
    if (state.sort === key) state.reverse = !state.reverse;
    else {
      state.sort = key;
      state.reverse = false;
    }
    state.page = 1;
    load();
  }

  function go(page) {
    state.page = page;
    load();
  }

  function drawPager(answer) {
    const last = Math.max(1, answer.page_count);
    const button = (label, page, title) =>
      h('button', { type: 'button', class: 'small', title, disabled: page < 1 || page > last || page === answer.page, onclick: () => go(page) }, label);
    const jump = h('input', { type: 'number', min: 1, max: last, value: answer.page, name: 'page', 'aria-label': 'Page' });
    jump.addEventListener('change', () => {
      const n = Math.min(last, Math.max(1, Math.round(Number(jump.value)) || 1));
      go(n);
    });
    fill(
      pager,
      button('«', 1, 'First page'),
      button('‹', answer.page - 1, 'Previous page'),
      h('span', {}, 'Page ', jump, ` of ${count(last)}`),
      button('›', answer.page + 1, 'Next page'),
      button('»', last, 'Last page'),
    );
  }

  let sequence = 0;
  async function load() {
    const mine = ++sequence;
    const path =
      endpoint(state.vhost) +
      query({
        page: state.page,
        page_size: state.pageSize,
        name: state.name,
        use_regex: state.regex ? 'true' : '',
        sort: state.sort,
        sort_reverse: state.reverse ? 'true' : '',
        columns: fields ? fields.join(',') : '',
      });
    let answer;
    try {
      answer = await get(path, { report: false });
    } catch (e) {
      if (mine !== sequence) return;
      // The list shrank under the page shown (queues deleted): the first page instead.
      if (e instanceof ApiError && e.error === 'page_out_of_range' && state.page !== 1) {
        state.page = 1;
        load();
        return;
      }
      fill(holder, h('p', { class: 'note bad', text: `Could not list ${noun}: ${e.reason || e.message}` }));
      return;
    }
    if (mine !== sequence) return;
    const first = answer.item_count ? (answer.page - 1) * answer.page_size + 1 : 0;
    const lastShown = first ? first + answer.item_count - 1 : 0;
    const filtered = answer.filtered_count < answer.total_count ? ` (filtered from ${count(answer.total_count)})` : '';
    const Noun = `${noun[0].toUpperCase()}${noun.slice(1)}`;
    summary.textContent = answer.item_count
      ? `${Noun} ${count(first)}–${count(lastShown)} of ${count(answer.filtered_count)}${filtered}`
      : `No ${noun}${filtered}`;
    fill(
      holder,
      table({
        columns,
        rows: answer.items,
        empty: answer.total_count ? `No ${noun} match.` : `No ${noun} yet.`,
        sort: { key: state.sort, reverse: state.reverse },
        onSort,
      }),
    );
    drawPager(answer);
  }

  return { el, refresh: load };
}
