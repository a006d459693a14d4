// Forms: labelled fields from a short description, their values read with their types (numbers,
// booleans, JSON objects), and a line under the form that says how the action went, with the
// API's reason when it failed.

import { h, say } from './dom.js';

/** A value the form itself refuses (a JSON field that is not an object). */
export class FormError extends Error {}

function control(f) {
  const common = { name: f.name, required: f.required, placeholder: f.placeholder };
  switch (f.type) {
    case 'select':
      return h(
        'select',
        common,
        (f.options || []).map(([value, label]) => h('option', { value, selected: value === f.value }, label ?? value)),
      );
    case 'checkbox':
      return h('input', { ...common, type: 'checkbox', checked: !!f.value });
    case 'textarea':
    case 'json':
      return h('textarea', { ...common, rows: f.rows || 3, spellcheck: 'false' }, f.value ?? '');
    default:
      return h('input', {
        ...common,
        type: f.type || 'text',
        value: f.value ?? '',
        min: f.min,
        max: f.max,
        autocomplete: f.autocomplete || 'off',
      });
  }
}

/**
 * A form. `fields`: {name, label, type (text, password, number, select, checkbox, textarea,
 * json), options ([value, label] for a select), value, placeholder, required, help}.
 * `onSubmit(values)` does the action and resolves to what to say when done; an ApiError or
 * FormError it throws is shown under the form.
 */
export function form({ id, fields, submit, onSubmit, className }) {
  const status = h('div', { class: 'status', role: 'status' });
  const button = h('button', { type: 'submit', class: 'primary', text: submit });
  const rows = fields.map((f) => {
    const input = control(f);
    if (f.type === 'checkbox') {
      return h('label', { class: 'field check' }, input, h('span', { text: f.label }), f.help && h('small', { text: f.help }));
    }
    return h(
      'label',
      { class: `field${f.wide ? ' wide' : ''}` },
      h('span', { class: 'label', text: f.label }),
      input,
      f.help && h('small', { text: f.help }),
    );
  });
  const el = h('form', { id, class: `form ${className || ''}`, novalidate: true }, rows, h('div', { class: 'actions' }, button, status));
  const byName = (name) => el.elements.namedItem(name);
  const kinds = Object.fromEntries(fields.map((f) => [f.name, f]));

  function values() {
    const out = {};
    for (const f of fields) {
      const input = byName(f.name);
      if (f.type === 'checkbox') out[f.name] = input.checked;
      else if (f.type === 'number') out[f.name] = input.value.trim() === '' ? undefined : Number(input.value);
      else if (f.type === 'json') out[f.name] = parseObject(input.value, f.label);
      else out[f.name] = input.value;
    }
    return out;
  }

  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const f of fields) {
      if (f.required && f.type !== 'checkbox' && !byName(f.name).value.trim()) {
        say(status, 'bad', `${f.label} is required.`);
        byName(f.name).focus();
        return;
      }
    }
    button.disabled = true;
    say(status, 'busy', 'Working…');
    try {
      const done = await onSubmit(values());
      say(status, 'ok', done || 'Done.');
    } catch (e) {
      say(status, 'bad', e.reason || e.message || String(e));
    } finally {
      button.disabled = false;
    }
  });

  return {
    el,
    status,
    values,
    set(name, value) {
      const input = byName(name);
      if (!input) return;
      if (kinds[name]?.type === 'checkbox') input.checked = !!value;
      else input.value = value ?? '';
    },
    /** Replaces a select's options, keeping the chosen one when it is still there. */
    options(name, options) {
      const input = byName(name);
      if (!input) return;
      const chosen = input.value;
      input.replaceChildren(...options.map(([value, label]) => h('option', { value }, label ?? value)));
      if (options.some(([value]) => value === chosen)) input.value = chosen;
    },
  };
}

/** A JSON object typed in a field; empty is `{}`. */
export function parseObject(text, label) {
  if (!text.trim()) return {};
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new FormError(`${label}: not valid JSON (${e.message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new FormError(`${label}: must be a JSON object, such as {"x-max-length": 1000}`);
  }
  return v;
}
