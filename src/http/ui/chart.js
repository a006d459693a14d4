// Charts of figures over the last minutes (message rates, queued messages), drawn on a canvas:
// each page keeps the figures it polls (every 5 s) in a History and redraws its charts.

import { h } from './dom.js';

/** Figures over time: points of {t (ms), values: {key: number}}, the oldest dropped. */
export class History {
  constructor(keepSeconds = 3600) {
    this.keep = keepSeconds * 1000;
    this.points = [];
  }

  add(values, t = Date.now()) {
    this.points.push({ t, values });
    const oldest = t - this.keep;
    while (this.points.length && this.points[0].t < oldest) this.points.shift();
  }

  /**
   * Points from the API's own samples (RabbitMQ's `*_details.samples`: [{sample, timestamp}],
   * newest first), for the figures of `keys`, older than any point held: a chart starts with
   * the broker's history when it keeps one. `counters` are cumulative: their rates are taken.
   */
  seed(object, keys, counters = false) {
    const firstHeld = this.points.length ? this.points[0].t : Infinity;
    const byTime = new Map();
    for (const [key, path] of Object.entries(keys)) {
      const samples = path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), object);
      if (!Array.isArray(samples)) continue;
      const sorted = samples
        .filter((s) => typeof s?.timestamp === 'number' && typeof s?.sample === 'number')
        .sort((a, b) => a.timestamp - b.timestamp);
      for (let i = counters ? 1 : 0; i < sorted.length; i += 1) {
        const s = sorted[i];
        if (s.timestamp >= firstHeld) continue;
        let v = s.sample;
        if (counters) {
          const prev = sorted[i - 1];
          const dt = (s.timestamp - prev.timestamp) / 1000;
          v = dt > 0 ? Math.max(0, (s.sample - prev.sample) / dt) : 0;
        }
        if (!byTime.has(s.timestamp)) byTime.set(s.timestamp, {});
        byTime.get(s.timestamp)[key] = v;
      }
    }
    const seeded = [...byTime.entries()].sort((a, b) => a[0] - b[0]).map(([t, values]) => ({ t, values }));
    this.points = [...seeded, ...this.points];
  }

  latest() {
    return this.points.length ? this.points[this.points.length - 1].values : {};
  }
}

/** Short figures for an axis: 950, 1.2k, 3.4M. */
function short(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  if (a > 0 && a < 10) return `${+v.toFixed(1)}`;
  return `${Math.round(v)}`;
}

/** The smallest 1, 2 or 5 times a power of ten that makes `max` fit in `steps` steps. */
function niceStep(max, steps) {
  const raw = max / steps;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    if (m * power >= raw) return m * power;
  }
  return 10 * power;
}

const live = new Set();
window.addEventListener('resize', () => {
  for (const chart of live) {
    if (document.body.contains(chart.el)) chart.redraw();
    else live.delete(chart);
  }
});

/** A gap between polls longer than this breaks the line (the tab was hidden, Warren was down). */
const GAP_MS = 20000;

/**
 * A chart of some figures of a History: `series` of {key, label, color}, over the last
 * `spanSeconds`, each value shown with `format` in the legend; `integer` for counts (whole
 * steps on the axis). `update(history)` redraws it.
 */
export function lineChart({ title, series, format, spanSeconds = 600, id, integer = false }) {
  const canvas = h('canvas', { class: 'chart', role: 'img', 'aria-label': title });
  const legend = h('ul', { class: 'legend' });
  const el = h('figure', { class: 'chart-box', id }, h('figcaption', { text: title }), canvas, legend);
  let history = new History();

  function drawLegend() {
    const latest = history.latest();
    legend.replaceChildren(
      ...series.map((s) => {
        const swatch = h('span', { class: 'swatch' });
        swatch.style.background = s.color;
        return h('li', {}, swatch, h('span', { text: s.label }), h('b', { text: format(latest[s.key]) }));
      }),
    );
    canvas.setAttribute('aria-label', `${title}: ${series.map((s) => `${s.label} ${format(latest[s.key])}`).join(', ')}`);
  }

  function redraw() {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(200, canvas.clientWidth || 400);
    const height = Math.max(100, canvas.clientHeight || 170);
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const pad = { left: 48, right: 10, top: 8, bottom: 22 };
    const w = width - pad.left - pad.right;
    const ht = height - pad.top - pad.bottom;
    const now = Date.now();
    const from = now - spanSeconds * 1000;
    const points = history.points.filter((p) => p.t >= from - GAP_MS);
    let max = 0;
    for (const p of points) {
      for (const s of series) {
        const v = p.values[s.key];
        if (typeof v === 'number' && Number.isFinite(v)) max = Math.max(max, v);
      }
    }
    // Counts (queued messages) step by whole numbers.
    const step = integer ? Math.max(1, niceStep(max > 0 ? max : 1, 4)) : niceStep(max > 0 ? max : 1, 4);
    const top = Math.max(step, Math.ceil((max > 0 ? max : 1) / step) * step);
    const x = (t) => pad.left + ((t - from) / (now - from)) * w;
    const y = (v) => pad.top + ht - (v / top) * ht;

    g.font = '11px system-ui, sans-serif';
    g.lineWidth = 1;
    g.strokeStyle = '#e3e6ea';
    g.fillStyle = '#5f6b7a';
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let v = 0; v <= top + step / 2; v += step) {
      g.beginPath();
      g.moveTo(pad.left, Math.round(y(v)) + 0.5);
      g.lineTo(pad.left + w, Math.round(y(v)) + 0.5);
      g.stroke();
      g.fillText(short(v), pad.left - 6, y(v));
    }
    // A clock label at every whole minute (every few when the span is long).
    g.textAlign = 'center';
    g.textBaseline = 'top';
    const minute = 60000;
    const every = Math.max(1, Math.ceil(spanSeconds / 60 / 6)) * minute;
    for (let t = Math.ceil(from / every) * every; t <= now; t += every) {
      const d = new Date(t);
      const label = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
      g.fillText(label, x(t), pad.top + ht + 5);
    }

    if (points.filter((p) => p.t >= from).length < 2) {
      const note = 'Collecting figures: a point every 5 seconds';
      const noteWidth = g.measureText(note).width;
      g.fillStyle = '#fff';
      g.fillRect(pad.left + w / 2 - noteWidth / 2 - 6, pad.top + ht / 2 - 9, noteWidth + 12, 18);
      g.fillStyle = '#5f6b7a';
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText(note, pad.left + w / 2, pad.top + ht / 2);
    }
    g.save();
    g.beginPath();
    g.rect(pad.left, pad.top - 2, w, ht + 4);
    g.clip();
    g.lineWidth = 2;
    g.lineJoin = 'round';
    for (const s of series) {
      g.strokeStyle = s.color;
      g.beginPath();
      let previous = null;
      for (const p of points) {
        const v = p.values[s.key];
        if (typeof v !== 'number' || !Number.isFinite(v)) {
          previous = null;
          continue;
        }
        if (previous && p.t - previous.t <= GAP_MS) g.lineTo(x(p.t), y(v));
        else g.moveTo(x(p.t), y(v));
        previous = p;
      }
      g.stroke();
    }
    g.restore();
  }

  const chart = {
    el,
    redraw,
    update(next) {
      history = next;
      drawLegend();
      redraw();
    },
  };
  live.add(chart);
  drawLegend();
  // Drawn once it has a size (after it is in the page).
  requestAnimationFrame(redraw);
  return chart;
}
