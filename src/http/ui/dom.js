// Building the page: elements from plain values (text is always text, never markup), figures
// formatted for reading, and the small pieces every page uses (sections, tables, notes).

/**
 * An element: `h('a', {href: '#/', class: 'x', onclick: f}, 'text', child, [more])`.
 * Attributes: `class`, `text`, `on<event>` handlers, booleans (set when true), the rest as is.
 * Children: nodes, strings (as text), arrays; null, undefined and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value' && 'value' in el) el.value = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 });

/** A count, with thousands separators; a dash when unknown. */
export function count(n) {
  return typeof n === 'number' && Number.isFinite(n) ? integer.format(n) : '–';
}

/** A rate per second. */
export function rate(r) {
  if (typeof r !== 'number' || !Number.isFinite(r)) return '–';
  // RabbitMQ's rates are never negative for counters; -0 shows as 0.
  const v = Math.abs(r) < 0.05 ? 0 : r;
  return `${decimal.format(v)}/s`;
}

/** Octets as KiB, MiB, GiB. */
export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** A time (milliseconds since the epoch) as local date and time. */
export function when(ms) {
  if (typeof ms !== 'number') return '–';
  const d = new Date(ms);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The value at a dotted path of an object. */
export function at(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}


/** A link to a page of the UI: the route's parts, each encoded. */
export function route(...parts) {
  return `#/${parts.map((p) => encodeURIComponent(p)).join('/')}`;
}

/** A titled part of a page. */
export function section(title, ...children) {
  return h('section', { class: 'panel' }, h('h2', { text: title }), ...children);
}

/** A part of a page that opens on demand (forms below a list). */
export function foldout(title, open, ...children) {
  return h('details', { class: 'panel', open }, h('summary', { text: title }), ...children);
}

/** A badge: `ok`, `warn` or `bad`. */
export function badge(kind, text) {
  return h('span', { class: `badge ${kind}`, text });
}

/** A table of name/value pairs (an object's fields). */
export function facts(rows) {
  return h(
    'table',
    { class: 'facts' },
    h(
      'tbody',
      {},
      rows
        .filter((r) => r)
        .map(([name, value]) => h('tr', {}, h('th', { text: name }), h('td', {}, value))),
    ),
  );
}

/** A value of a JSON object (arguments, a policy's definition, headers) as short text. */
export function jsonText(v) {
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** An object's keys and values as a small table; a note when it has none. */
export function keyValues(obj, empty = 'none') {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h('span', { class: 'muted', text: empty });
  return h(
    'table',
    { class: 'kv' },
    h(
      'tbody',
      {},
      entries.map(([k, v]) => h('tr', {}, h('th', { text: k }), h('td', { text: jsonText(v) }))),
    ),
  );
}

/**
 * A table: `columns` of {label, value(row) -> node or text, sort (the API's field, when it can
 * sort by it), class}; `sort` ({key, reverse}) and `onSort(key)` for sortable headers.
 */
export function table({ columns, rows, empty = 'Nothing to show.', sort, onSort, rowClass }) {
  const head = h(
    'tr',
    {},
    columns.map((c) => {
      if (!c.sort || !onSort) return h('th', { class: c.class, text: c.label, title: c.title });
      const active = sort && sort.key === c.sort;
      const arrow = active ? (sort.reverse ? ' ▼' : ' ▲') : '';
      return h(
        'th',
        { class: `${c.class || ''} sortable${active ? ' sorted' : ''}`, 'aria-sort': active ? (sort.reverse ? 'descending' : 'ascending') : 'none' },
        h('button', { type: 'button', class: 'link', title: `Sort by ${c.label}`, onclick: () => onSort(c.sort) }, c.label + arrow),
      );
    }),
  );
  const body = rows.length
    ? rows.map((row) =>
        h(
          'tr',
          { class: rowClass ? rowClass(row) : undefined },
          columns.map((c) => {
            const v = c.value(row);
            return h('td', { class: c.class }, v instanceof Node ? v : v === undefined || v === null ? '' : String(v));
          }),
        ),
      )
    : [h('tr', {}, h('td', { class: 'empty', colspan: columns.length, text: empty }))];
  return h('table', { class: 'list' }, h('thead', {}, head), h('tbody', {}, body));
}

/** A line that says how an action went: `ok` or `bad`. Replaces what the element said before. */
export function say(el, kind, text) {
  fill(el, h('span', { class: `note ${kind}`, text }));
}

/** Asks before doing something that cannot be undone. */
export function confirmed(question) {
  return window.confirm(question);
}

// A note carried to the next page shown (what an action that moves away did: "Queue deleted").
let flashed = null;

export function flash(text) {
  flashed = text;
}

/** The note for the page being shown, once. */
export function takeFlash() {
  const text = flashed;
  flashed = null;
  return text;
}
