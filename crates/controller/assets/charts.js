// Small SVG line charts for the live metrics: one chart per quantity, one line per version,
// vertical marks where a rollout changed step or phase. No library: an SVG with a fixed
// viewBox scales with its container, and the text stays legible at phone width.

const SVG = 'http://www.w3.org/2000/svg';
const H = 170;
const PAD = { left: 52, right: 10, top: 18, bottom: 24 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The smallest "nice" number (1, 2, 2.5, 5 × 10ⁿ) at or above `x`. */
export function niceCeil(x) {
  if (!(x > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= x * 0.999999) return m * exp;
  return 10 * exp;
}

function clock(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/**
 * Draws a chart.
 *   series:  [{ label, className, points: [[ms, value|null], …] }]  (null leaves a gap)
 *   markers: [{ ms, label, className }]
 *   t0, t1:  the time range; format: value → axis text; floor: smallest y range;
 *   width:   of the drawing in SVG units (it scales to its box; narrower = larger text).
 */
export function lineChart({ title, series, markers = [], t0, t1, format, floor = 0, width = 520 }) {
  const W = width;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title });
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const span = Math.max(1, t1 - t0);
  let max = floor;
  for (const s of series) for (const [t, v] of s.points) if (v != null && t >= t0 && v > max) max = v;
  const top = niceCeil(max);
  const x = (t) => PAD.left + ((t - t0) / span) * plotW;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  // Grid and y labels: 0, ¼, ½, ¾ and the top.
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: i ? 'grid' : 'axis' }));
    svg.append(el('text', { x: PAD.left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, format(v)));
  }
  // Time labels at the ends and the middle.
  for (const [t, anchor] of [[t0, 'start'], [(t0 + t1) / 2, 'middle'], [t1, 'end']]) {
    svg.append(el('text', { x: x(t), y: H - 6, class: 'tick', 'text-anchor': anchor }, clock(t)));
  }
  // Step changes and other rollout events.
  // Events close together (a pause and a resume in one second) get their labels on separate
  // rows instead of drawn over each other.
  const rowEnds = [];
  for (const m of [...markers].sort((a, b) => a.ms - b.ms)) {
    if (m.ms < t0 || m.ms > t1) continue;
    const mx = x(m.ms);
    let row = rowEnds.findIndex((end) => mx > end);
    if (row < 0) row = rowEnds.length;
    const labelW = 6 * m.label.length + 8;
    rowEnds[row] = mx + labelW;
    const anchorEnd = mx + labelW > W - PAD.right;
    svg.append(el('line', { x1: mx, x2: mx, y1: PAD.top - 4, y2: PAD.top + plotH, class: `marker ${m.className ?? ''}` }));
    svg.append(
      el(
        'text',
        {
          x: anchorEnd ? mx - 3 : mx + 3,
          y: PAD.top - 6 + 12 * row,
          'text-anchor': anchorEnd ? 'end' : 'start',
          class: `marker-label ${m.className ?? ''}`,
        },
        m.label,
      ),
    );
  }
  // One path per version; a null value (no traffic that second) breaks the line.
  for (const s of series) {
    let d = '';
    let pen = false;
    let last = null;
    let drawn = 0;
    for (const [t, v] of s.points) {
      if (t < t0) continue;
      if (v == null) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      last = [t, v];
      drawn += 1;
    }
    if (!drawn) continue;
    svg.append(el('path', { d, class: `line ${s.className}` }));
    // A dot on the latest value, so a flat line at zero is still visible.
    svg.append(el('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, class: `dot ${s.className}` }));
  }
  return svg;
}
