// The dashboard page: renders the live state the feed worker keeps, and sends actions through
// the REST API. Everything shown comes from the server; nothing here invents data.

import { apply, isTerminal } from './feed.js';
import { lineChart } from './charts.js';

const TOKEN_KEY = 'canary.adminToken';
const DEFAULT_STEPS = '1%/30s,5%/1m,25%/2m,50%/2m,100%';
/** Seconds of ticks the error-rate line sums over: one second of traffic is too few requests. */
const ERROR_WINDOW_S = 10;

let state = null;
let feed = { status: 'connecting', tabs: 0, shared: false, retryInMs: 0 };
/** rollout id → Date.now() when its view arrived, to advance "time in step" between updates. */
const received = new Map();
/** service name → the parts of its card. */
const cards = new Map();

// ---- The feed worker ------------------------------------------------------------------------

const port = startWorker();
let lastFromWorker = Date.now();
port.onmessage = (e) => fromWorker(e.data);
hello();

function startWorker() {
  const url = new URL('./worker.js', import.meta.url);
  // One socket for the whole browser where SharedWorker exists; else one per tab, same script.
  if ('SharedWorker' in window) {
    const worker = new SharedWorker(url, { type: 'module', name: 'canary-feed' });
    worker.port.start();
    return worker.port;
  }
  return new Worker(url, { type: 'module', name: 'canary-feed' });
}

function hello() {
  port.postMessage({ type: 'hello', token: token() });
}

function fromWorker(msg) {
  lastFromWorker = Date.now();
  switch (msg.type) {
    case 'ping':
      port.postMessage({ type: 'pong' });
      break;
    case 'status': {
      const was = feed.status;
      feed = msg;
      renderStatus();
      // Ask once when the feed is refused, not again at every later status message.
      if (msg.status === 'unauthorized' && was !== 'unauthorized') askForToken();
      break;
    }
    case 'state':
      state = msg.state;
      for (const s of state.services) if (s.rollout) received.set(s.rollout.id, Date.now());
      schedule();
      break;
    case 'delta':
      if (!state) return;
      state = apply(state, msg.msg);
      if (msg.msg.rollout) received.set(msg.msg.rollout.id, Date.now());
      schedule();
      break;
  }
}

// The worker pings every few seconds. If it forgot this tab (the tab was frozen in the
// background longer than the worker waits), silence follows: say hello again.
setInterval(() => {
  if (Date.now() - lastFromWorker > 20_000) hello();
}, 5_000);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && Date.now() - lastFromWorker > 12_000) hello();
});
window.addEventListener('pageshow', (e) => e.persisted && hello());
// A hint only: the worker's pings are what really notice a closed tab.
window.addEventListener('pagehide', () => port.postMessage({ type: 'bye' }));

// ---- Token and API calls -------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || null;
}

const tokenDialog = document.getElementById('token-dialog');
const tokenButton = document.getElementById('token-button');
tokenButton.addEventListener('click', askForToken);
tokenDialog.addEventListener('close', () => {
  if (tokenDialog.returnValue !== 'ok') return;
  const value = document.getElementById('token-input').value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  port.postMessage({ type: 'token', token: value });
  renderStatus();
});

function askForToken() {
  tokenButton.hidden = false;
  if (!tokenDialog.open) {
    document.getElementById('token-input').value = token() ?? '';
    tokenDialog.returnValue = '';
    tokenDialog.showModal();
  }
}

/** Calls the admin API; shows the envelope's clientMessage either way. Returns the envelope or null. */
async function call(method, path, body) {
  // Every call says JSON, even without a body: the admin API refuses changes that do not,
  // which is what keeps another site's HTML form from steering a rollout.
  const headers = { 'content-type': 'application/json' };
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  let response;
  let envelope;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    envelope = await response.json();
  } catch (e) {
    toast(`The admin API did not answer (${e.message}).`, 'error');
    return null;
  }
  if (envelope.code !== 'OK') {
    toast(envelope.clientMessage || `The call failed with HTTP ${response.status}.`, 'error');
    if (response.status === 401) askForToken();
    return null;
  }
  toast(envelope.clientMessage, 'ok');
  return envelope;
}

let toastTimer = null;
function toast(text, kind) {
  const node = document.getElementById('toast');
  node.textContent = text;
  node.className = `toast toast-${kind}`;
  node.hidden = false;
  node.dataset.testid = 'toast';
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), kind === 'error' ? 10_000 : 5_000);
}

const confirmDialog = document.getElementById('confirm');
/** Asks a person to confirm; resolves to the reason they gave, or null when they cancel. */
function confirmAction(title, text, okLabel) {
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  document.getElementById('confirm-reason').value = '';
  confirmDialog.returnValue = '';
  confirmDialog.showModal();
  return new Promise((resolve) => {
    confirmDialog.addEventListener(
      'close',
      () => {
        const reason = document.getElementById('confirm-reason').value.trim();
        resolve(confirmDialog.returnValue === 'ok' ? reason || 'by an operator' : null);
      },
      { once: true },
    );
  });
}

// ---- Rendering ------------------------------------------------------------------------------

/** Builds an element; attributes named on* become listeners, children may be strings. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v == null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

let scheduled = false;
function schedule() {
  // Batch bursts of deltas into one render; setTimeout (not requestAnimationFrame) so
  // background tabs keep their DOM current too.
  if (scheduled) return;
  scheduled = true;
  setTimeout(() => {
    scheduled = false;
    render();
  }, 30);
}

function renderStatus() {
  const conn = document.getElementById('conn');
  const words = {
    idle: 'Idle',
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: feed.retryInMs ? `Reconnecting in ${Math.ceil(feed.retryInMs / 1000)} s…` : 'Reconnecting…',
    unauthorized: 'Needs admin token',
  };
  conn.textContent = words[feed.status] ?? feed.status;
  conn.className = `conn conn-${feed.status}`;
  conn.dataset.status = feed.status;
  const sharing = document.getElementById('sharing');
  sharing.dataset.tabs = String(feed.tabs);
  sharing.dataset.shared = String(feed.shared);
  sharing.textContent = feed.shared
    ? `${feed.tabs} ${feed.tabs === 1 ? 'tab shares' : 'tabs share'} this browser's connection`
    : 'This tab has its own connection (no SharedWorker here)';
  if (state?.authRequired || token()) tokenButton.hidden = false;
  tokenButton.textContent = !token() ? 'Admin token' : state?.role === 'read' ? 'Read token ✓' : 'Admin token ✓';
  document.body.classList.toggle('stale', feed.status !== 'live');
}

function render() {
  if (!state) return;
  document.getElementById('placeholder')?.remove();
  renderStatus();
  const main = document.getElementById('services');
  for (const svc of state.services) {
    let card = cards.get(svc.name);
    if (!card) {
      card = makeCard(svc.name);
      cards.set(svc.name, card);
      main.append(card.root);
    }
    fillCard(card, svc);
  }
}

const PHASE = {
  pending: 'Pending',
  progressing: 'Progressing',
  paused: 'Paused',
  awaitingApproval: 'Waiting for approval',
  promoted: 'Promoted',
  aborted: 'Aborted',
  failed: 'Rolled back',
};

function makeCard(name) {
  const part = (cls) => h('div', { class: cls });
  const card = {
    name,
    title: h('h2', {}, name),
    badge: h('span', { class: 'badge', 'data-testid': 'phase' }),
    versions: h('p', { class: 'versions muted' }),
    summary: part('summary'),
    judge: part('judge'),
    charts: part('charts'),
    timeline: part('timeline'),
    history: part('history'),
  };
  const act = (action, label, cls) =>
    h('button', { type: 'button', class: cls, 'data-action': action, onclick: () => onAction(card, action) }, label);
  card.buttons = {
    pause: act('pause', 'Pause', 'secondary'),
    resume: act('resume', 'Resume', 'primary'),
    approve: act('approve', 'Approve…', 'primary'),
    reject: act('reject', 'Reject…', 'danger'),
    promote: act('promote', 'Promote…', 'secondary'),
    abort: act('abort', 'Abort…', 'danger'),
    start: h('button', { type: 'button', class: 'primary', onclick: () => toggleStart(card, true) }, 'Start a rollout'),
  };
  card.form = startForm(card);
  card.root = h(
    'section',
    { class: 'service', 'data-service': name, 'data-testid': `service-${name}` },
    h(
      'div',
      { class: 'service-head' },
      h('div', { class: 'title' }, card.title, card.badge),
      card.versions,
      h('div', { class: 'actions' }, Object.values(card.buttons)),
    ),
    card.form,
    card.summary,
    card.judge,
    h('h3', { class: 'section-title' }, 'Live metrics'),
    card.charts,
    h('div', { class: 'lower' }, card.timeline, card.history),
  );
  return card;
}

function startForm(card) {
  const field = (label, input, hint) => h('label', {}, label, input, hint ? h('small', { class: 'muted' }, hint) : null);
  const input = (name, attrs) => h('input', { name, autocomplete: 'off', ...attrs });
  const form = h(
    'form',
    { class: 'start-form', hidden: true, 'data-testid': 'start-form' },
    h('h3', {}, 'Start a rollout'),
    h(
      'div',
      { class: 'form-grid' },
      field('Canary version', input('version', { required: true, placeholder: 'v2', pattern: '[A-Za-z0-9._-]+' })),
      field('Upstreams', input('upstreams', { required: true, placeholder: '10.0.0.5:8080, 10.0.0.6:8080' }), 'comma-separated host:port'),
      field('Steps', input('steps', { value: DEFAULT_STEPS }), 'weight/hold, …; the last step without a hold'),
    ),
    h(
      'details',
      {},
      h('summary', {}, 'Judge settings'),
      h(
        'div',
        { class: 'form-grid' },
        field('Min requests per version', input('minRequestsPerVersion', { type: 'number', min: 1, placeholder: 'default' })),
        field('Min requests per step', input('minRequestsPerStep', { type: 'number', min: 1, placeholder: 'default' })),
        field('False-rollback rate α', input('alpha', { type: 'number', step: 'any', min: 0, max: 0.5, placeholder: 'default' })),
        field('Max ratio (margin)', input('maxRatio', { type: 'number', step: 'any', min: 1, placeholder: 'none' })),
      ),
    ),
    h(
      'div',
      { class: 'dialog-actions' },
      h('button', { type: 'button', class: 'ghost', onclick: () => toggleStart(card, false) }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, 'Start'),
    ),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const text = (k) => String(data.get(k) ?? '').trim();
    const body = {
      version: text('version'),
      upstreams: text('upstreams').split(/[\s,]+/).filter(Boolean),
    };
    if (text('steps')) body.steps = text('steps');
    const analysis = {};
    for (const k of ['minRequestsPerVersion', 'minRequestsPerStep']) if (text(k)) analysis[k] = Number.parseInt(text(k), 10);
    for (const k of ['alpha', 'maxRatio']) if (text(k)) analysis[k] = Number(text(k));
    if (Object.keys(analysis).length) body.analysis = analysis;
    const ok = await call('POST', `/api/v1/services/${encodeURIComponent(card.name)}/rollouts`, body);
    if (ok) toggleStart(card, false);
  });
  return form;
}

function toggleStart(card, open) {
  card.form.hidden = !open;
  if (open) card.form.querySelector('input[name=version]').focus();
}

async function onAction(card, action) {
  const svc = state?.services.find((s) => s.name === card.name);
  const r = svc?.rollout;
  if (!r) return;
  let reason = 'by an operator';
  if (action === 'promote') {
    reason = await confirmAction(
      `Promote ${r.canary.version} on ${card.name}?`,
      `Every new session goes to ${r.canary.version} now, skipping the remaining steps and the judge. ` +
        `${r.stable.version} keeps its pinned sessions while it drains.`,
      'Promote',
    );
  } else if (action === 'approve' || action === 'reject') {
    const approve = action === 'approve';
    reason = await confirmAction(
      `${approve ? 'Approve' : 'Reject'} ${r.canary.version} on ${card.name}?`,
      approve
        ? `The rollout goes on to its next step; the judge keeps watching.`
        : `The rollout is aborted: ${r.canary.version} gets no traffic from now on.`,
      approve ? 'Approve' : 'Reject',
    );
  } else if (action === 'abort') {
    reason = await confirmAction(
      `Abort the rollout of ${r.canary.version}?`,
      `${r.canary.version} gets no traffic from now on; everyone goes back to ${r.stable.version}.`,
      'Abort rollout',
    );
  }
  if (reason === null) return;
  const body = action === 'resume' ? undefined : { reason };
  await call('POST', `/api/v1/services/${encodeURIComponent(card.name)}/rollout/${action}`, body);
}

function fillCard(card, svc) {
  const r = svc.rollout;
  const active = r && !isTerminal(r.phase);
  const routing = svc.routing;
  card.badge.textContent = r ? PHASE[r.phase] ?? r.phase : 'No rollout';
  card.badge.className = `badge phase-${r ? r.phase : 'none'}`;
  card.root.dataset.phase = r ? r.phase : 'none';
  const canary = routing.canary ? ` · canary ${routing.canary.version} at ${pct(routing.weight)}` : '';
  const draining = routing.draining ? ` · ${routing.draining} draining` : '';
  const tripped = routing.canaryTripped ? ' · canary breaker tripped' : '';
  card.versions.textContent = `stable ${routing.stable.version}${canary}${draining}${tripped} · gateway ${routing.listen}`;
  // A read token sees everything and changes nothing: the server would refuse the actions.
  const canAct = state.role !== 'read';
  const waiting = active && r.phase === 'awaitingApproval';
  card.buttons.approve.hidden = !(canAct && waiting);
  card.buttons.reject.hidden = !(canAct && waiting);
  card.buttons.pause.hidden = !(canAct && active && r.phase === 'progressing');
  card.buttons.resume.hidden = !(canAct && active && r.phase === 'paused');
  card.buttons.promote.hidden = !(canAct && active);
  card.buttons.abort.hidden = !(canAct && active);
  card.buttons.start.hidden = !canAct || active;
  if (active) card.form.hidden = true;
  card.summary.replaceChildren(...summary(svc));
  card.judge.replaceChildren(...judgePanel(r));
  card.charts.replaceChildren(...charts(svc));
  card.timeline.replaceChildren(...timeline(svc));
  card.history.replaceChildren(...history(svc));
}

function tile(label, value, extra, testid) {
  return h('div', { class: 'tile', 'data-testid': testid }, h('div', { class: 'tile-label' }, label), h('div', { class: 'tile-value' }, value), extra);
}

function summary(svc) {
  const r = svc.rollout;
  if (!r) {
    return [h('p', { class: 'muted lead' }, `No rollout yet: ${svc.routing.stable.version} serves everyone.`)];
  }
  const steps = h(
    'ol',
    { class: 'steps' },
    r.steps.flatMap((s, i) => {
      const waiting = i === r.step && r.phase === 'awaitingApproval';
      const done = i < r.step || r.phase === 'promoted' || waiting;
      const cls = done ? 'done' : i === r.step && !isTerminal(r.phase) ? 'current' : '';
      const step = h('li', { class: cls, title: `${pct(s.weight)} for ${s.hold}` }, pct(s.weight));
      if (!s.approve) return [step];
      const gate = h('li', { class: waiting ? 'approval current' : 'approval', title: 'a person approves before the next step' }, 'approve');
      return [step, gate];
    }),
  );
  const target = r.weight;
  const observed = recentShare(svc);
  const overall = r.judge?.observedCanaryShare;
  const share = h(
    'div',
    { class: 'share-bar', 'aria-hidden': 'true' },
    h('div', { class: 'share-fill', style: null }),
    h('div', { class: 'share-target' }),
  );
  // CSSOM writes are allowed by the page's CSP (inline style attributes are not).
  share.firstChild.style.width = `${Math.min(100, observed ?? 0)}%`;
  share.lastChild.style.left = `${Math.min(100, target)}%`;
  const held = heldSeconds(r);
  const hold = r.holdSeconds;
  const clock = h('div', { class: 'meter' }, h('div', { class: 'meter-fill' }));
  clock.firstChild.style.width = `${hold > 0 ? Math.min(100, (100 * held) / hold) : 100}%`;
  const stepText = isTerminal(r.phase) ? `${r.steps.length} steps` : `${r.step + 1} of ${r.steps.length}`;
  const timeText = isTerminal(r.phase)
    ? `took ${duration((r.updatedMs - r.createdMs) / 1000)}`
    : `${duration(held)} of ${duration(hold)}${r.phase === 'paused' ? ' (paused)' : ''}`;
  return [
    h(
      'div',
      { class: 'tiles' },
      tile('Step', stepText, steps, 'step'),
      tile(
        'Canary share',
        isTerminal(r.phase)
          ? `${pct(target)} now`
          : h('span', {}, `${pct(target)} target`, h('span', { class: 'muted' }, ` · ${observed == null ? '—' : pct(observed)} now`)),
        [share, overall == null || isTerminal(r.phase) ? null : h('div', { class: 'muted small share-note' }, `${pct(overall)} of the rollout's requests so far`)],
        'share',
      ),
      tile('Time in step', timeText, clock, 'held'),
      tile('Rollout', r.id, h('div', { class: 'muted small' }, `${r.stable.version} → ${r.canary.version}, started ${clockTime(r.createdMs)}`), 'rollout-id'),
    ),
  ];
}

/** The canary's share of requests over the last ERROR_WINDOW_S seconds of ticks, in percent. */
function recentShare(svc) {
  const r = svc.rollout;
  const ticks = state.metrics;
  if (!r || !ticks.length) return null;
  const since = ticks[ticks.length - 1].atMs - ERROR_WINDOW_S * 1000;
  let canary = 0;
  let total = 0;
  for (let i = ticks.length - 1; i >= 0 && ticks[i].atMs > since; i--) {
    for (const p of ticks[i].points) {
      if (p.service !== svc.name) continue;
      total += p.requests;
      if (p.version === r.canary.version) canary += p.requests;
    }
  }
  return total > 0 ? (100 * canary) / total : null;
}

function heldSeconds(r) {
  if (r.phase !== 'progressing') return r.heldSeconds;
  const since = received.get(r.id) ?? Date.now();
  return r.heldSeconds + (Date.now() - since) / 1000;
}

// ---- The judge in words ---------------------------------------------------------------------

const METRIC = {
  errors: 'error rate',
  latencyTail: 'share of slow requests',
  latencyP50: 'median latency',
  latencyP90: 'p90 latency',
  sampleRatio: 'share of new users',
};

/** What a verdict is called: a team metric by its own name. */
function metricName(v) {
  return v.team ? v.team.name : (METRIC[v.metric] ?? v.metric);
}

/** A team metric's verdict in words: a ratio like the error rate (its misses when higher is better), a value by its latest numbers. */
function teamSentence(v, j) {
  const t = v.team;
  if (v.reason === 'noData') return `no data${t.noData ? ` (${t.noData})` : ''}; holding the step`;
  if (t.kind === 'value') {
    if (v.reason === 'afterHold') return 'judged once the step has held long enough';
    const better = t.direction === 'higher-is-better' ? 'higher is better' : 'lower is better';
    const margin = `${num(100 * t.margin)}% (${better})`;
    const values = `canary ${num(t.canaryValue)} against stable's ${num(t.stableValue)}`;
    if (v.verdict === 'worse') return `${values}: worse by more than ${margin}${j.decision === 'rollback' ? ', rolling back' : ''}`;
    return `${values}, within ${margin}`;
  }
  const misses = t.direction === 'higher-is-better' ? 'misses' : 'events';
  if (v.reason === 'notEnoughData') return `waiting for data: ${v.canary.requests} canary and ${v.stable.requests} stable trials`;
  const est = v.estimate == null ? 'not measurable yet' : `${ratio(v.estimate)} stable's`;
  let text = `canary ${misses} ${est}${intervalText(v.interval)}`;
  if (v.verdict === 'worse') text += j.decision === 'rollback' ? ', rolling back' : ', worse';
  else if (v.reason === 'notYetShownSafe' && v.tolerance) text += `; not yet shown below ${ratio(v.tolerance.safeBelow)}`;
  else if (v.verdict === 'pass') text += ', within tolerance';
  return text;
}

function judgePanel(r) {
  if (!r) return [];
  if (isTerminal(r.phase)) {
    const words = { promoted: 'Promoted', aborted: 'Aborted', failed: 'Rolled back' }[r.phase];
    return [h('p', { class: `headline headline-${r.phase}`, 'data-testid': 'headline' }, `${words}${r.reason ? `: ${r.reason}` : '.'}`)];
  }
  const j = r.judge;
  if (!j) {
    const why = r.phase === 'paused' && r.reason ? `Paused: ${r.reason}.` : 'The judge has not looked yet.';
    return [h('p', { class: 'headline', 'data-testid': 'headline' }, why), ...gateLines(r)];
  }
  const rows = j.verdicts.map((v) => verdictRow(v, j, r));
  return [
    h('p', { class: `headline headline-${j.decision}`, 'data-testid': 'headline' }, headline(r, j)),
    ...gateLines(r),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'verdicts' },
        h('thead', {}, h('tr', {}, ['Metric', 'Verdict', 'What the judge sees', 'Canary ÷ stable', 'Evidence of harm'].map((t) => h('th', {}, t)))),
        h('tbody', {}, rows),
      ),
    ),
    h('p', { class: 'muted small' }, `Judged ${clockTime(j.atMs)} · α = ${r.analysis.alpha} over the whole rollout · intervals hold at any time the judge looks.`),
  ];
}

/** The release gates of the current step, one line each (see docs/gates.md). */
function gateLines(r) {
  return (r.gates ?? []).map((g) => {
    let text;
    if (g.status === 'running') {
      const running = g.shards.filter((s) => s.status === 'running').map((s) => s.shard);
      const seconds = Math.round((Date.now() - g.startedMs) / 1000);
      text = `Waiting on gate ${g.name}: shard${running.length === 1 ? '' : 's'} ${running.join(', ')} of ${g.shards.length} running, ${seconds} s.`;
    } else if (g.status === 'passed') {
      text = `Gate ${g.name} passed${g.report ? `: ${g.report.tests} tests` : ''}.`;
    } else {
      const failed = (g.report?.failed ?? []).map((t) => t.name);
      text = `Gate ${g.name} failed${failed.length ? `: ${failed.join('; ')}` : g.message ? `: ${g.message}` : ''}.`;
    }
    return h('p', { class: `gate gate-${g.status}`, 'data-testid': 'gate' }, text);
  });
}

function headline(r, j) {
  const worse = j.verdicts.find((v) => v.verdict === 'worse' && v.metric !== 'sampleRatio');
  if (r.phase === 'awaitingApproval' && j.decision !== 'rollback') {
    return 'Waiting for a person to approve or reject. The judge keeps watching and still rolls back a worse canary.';
  }
  switch (j.decision) {
    case 'rollback':
      return `Rolling back: ${sentence(worse ?? j.verdicts[0], j, r)}.`;
    case 'needsAttention':
      return 'Needs a person: new users do not split as the weight says, so the rollout pauses.';
    case 'advance':
      return 'Advancing: every metric passes and the step has held long enough.';
    default: {
      if (r.phase === 'paused') return `Paused${r.reason ? `: ${r.reason}` : ''}. The judge keeps watching.`;
      const waiting = j.verdicts.filter((v) => v.reason === 'notEnoughData');
      if (waiting.length) return 'Holding: waiting for enough requests on both versions.';
      const unproven = j.verdicts.find((v) => v.reason === 'notYetShownSafe');
      if (unproven) return `Holding: ${metricName(unproven)} not yet shown within its tolerance; collecting.`;
      const missing = j.verdicts.find((v) => v.reason === 'noData');
      if (missing) return `Holding: no data from team metric ${metricName(missing)}.`;
      return `Holding: every metric within its tolerance; ${duration(Math.max(0, r.holdSeconds - heldSeconds(r)))} left in this step.`;
    }
  }
}

/** E.g. "canary error rate 2.1× stable's (1.4×–3.2×)". */
function sentence(v, j, r) {
  if (v.team) return `${v.team.name}: ${teamSentence(v, j)}`;
  const range = intervalText(v.interval);
  if (v.metric === 'sampleRatio') {
    return v.estimate == null
      ? 'not enough new users yet to check the split'
      : `new users on canary ${ratio(v.estimate)} what the weight predicts${range}`;
  }
  let what = METRIC[v.metric] ?? v.metric;
  if (v.metric === 'latencyTail' && j.tailThresholdSeconds) what += ` (over ${latency(j.tailThresholdSeconds)})`;
  if (v.reason === 'notEnoughData') {
    const need = r.analysis.minRequestsPerVersion;
    return `waiting for data: ${v.canary.requests} canary and ${v.stable.requests} stable requests of ${need} each`;
  }
  if (v.estimate == null && v.canary.events === 0 && v.stable.events === 0) {
    const none = v.metric === 'errors' ? 'no errors' : 'no slow requests';
    return `${none} in ${v.canary.requests} canary and ${v.stable.requests} stable requests${v.verdict === 'pass' ? ', within tolerance' : ''}`;
  }
  const est = v.estimate == null ? 'not measurable yet' : `${ratio(v.estimate)} stable's`;
  let text = `canary ${what} ${est}${range}`;
  if (v.verdict === 'worse') text += j.decision === 'rollback' ? ', rolling back' : ', worse';
  else if (v.reason === 'notYetShownSafe' && v.tolerance) text += `; not yet shown below ${ratio(v.tolerance.safeBelow)}`;
  else if (v.verdict === 'pass') text += ', within tolerance';
  return text;
}

function verdictRow(v, j, r) {
  const chip = { pass: ['OK', 'ok'], worse: ['Worse', 'bad'], inconclusive: ['Not yet', 'wait'] }[v.verdict] ?? [v.verdict, 'wait'];
  const counts = (s) => (s.events == null ? `${s.requests}` : `${s.events} / ${s.requests}`);
  const value = v.team?.kind === 'value';
  const noTest = h('span', { class: 'muted' }, value ? 'margin after the hold' : 'band test');
  const evidence = v.eValue == null ? noTest : evidenceBar(v.eValue, v.threshold);
  const samples = value
    ? `canary ${num(v.team.canaryValue)} · stable ${num(v.team.stableValue)}`
    : `canary ${counts(v.canary)} · stable ${counts(v.stable)}`;
  return h(
    'tr',
    { 'data-metric': v.team ? v.team.name : v.metric },
    h('th', { scope: 'row' }, metricName(v)),
    h('td', {}, h('span', { class: `chip chip-${chip[1]}` }, chip[0])),
    h('td', { class: 'sentence' }, sentence(v, j, r), h('div', { class: 'muted small' }, samples)),
    h(
      'td',
      { class: 'num' },
      v.estimate == null ? '—' : ratio(v.estimate),
      value
        ? h('div', { class: 'muted small' }, 'latest values')
        : h('div', { class: 'muted small' }, intervalText(v.interval, true) || 'no interval yet', ` · ${Math.round(v.interval.level * 1000) / 10}%`),
    ),
    h('td', { class: 'num' }, evidence),
  );
}

/** The e-value against its threshold on a log scale: the bar fills as evidence of harm grows. */
function evidenceBar(e, threshold) {
  const fill = threshold > 1 ? Math.max(0, Math.min(1, Math.log(Math.max(e, 1)) / Math.log(threshold))) : 0;
  const bar = h('div', { class: 'evidence' }, h('div', { class: 'evidence-fill' }));
  bar.firstChild.style.width = `${fill * 100}%`;
  if (fill >= 1) bar.classList.add('crossed');
  return h('div', {}, h('span', {}, `e = ${num(e)}`, h('span', { class: 'muted' }, ` of ${num(threshold)}`)), bar);
}

function intervalText(i, bare = false) {
  const lo = i.lower == null ? null : ratio(i.lower);
  const hi = i.upper == null ? null : ratio(i.upper);
  let text = '';
  if (lo && hi) text = `${lo}–${hi}`;
  else if (lo) text = `at least ${lo}`;
  else if (hi) text = `at most ${hi}`;
  if (!text) return '';
  return bare ? text : ` (${text})`;
}

// ---- Charts ---------------------------------------------------------------------------------

function charts(svc) {
  const ticks = state.metrics;
  if (!ticks.length) return [h('p', { class: 'muted' }, 'The first metric tick arrives within a second.')];
  const now = ticks[ticks.length - 1].atMs;
  const r = svc.rollout;
  const first = ticks[0].atMs;
  // Over the rollout when one runs (from a little before it started), else the last 5 minutes.
  const from = r && !isTerminal(r.phase) ? r.createdMs - 15_000 : now - 5 * 60_000;
  const t0 = Math.max(first, from);
  const t1 = Math.max(now, t0 + 30_000);

  const byVersion = new Map();
  for (const tick of ticks) {
    if (tick.atMs < t0 - ERROR_WINDOW_S * 1000) continue;
    for (const p of tick.points) {
      if (p.service !== svc.name) continue;
      if (!byVersion.has(p.version)) byVersion.set(p.version, []);
      byVersion.get(p.version).push([tick.atMs, p]);
    }
  }
  const roleOf = (version) => {
    if (r && !isTerminal(r.phase)) return version === r.canary.version ? 'canary' : version === r.stable.version ? 'stable' : 'other';
    if (version === svc.routing.stable.version) return 'stable';
    return svc.routing.canary?.version === version ? 'canary' : 'other';
  };
  const versions = [...byVersion.keys()].sort((a, b) => rank(roleOf(a)) - rank(roleOf(b)));
  const series = (value) =>
    versions.map((v) => ({ label: v, className: `v-${roleOf(v)}`, points: value(byVersion.get(v)) }));
  const plain = (key, scale = 1) => (pts) => pts.map(([t, p]) => [t, p[key] == null ? null : p[key] * scale]);
  // Error rate over a sliding window of whole requests, so one failed request in a quiet
  // second does not draw a 100 % spike.
  const windowed = (pts) => {
    const out = [];
    let start = 0;
    let requests = 0;
    let errors = 0;
    for (let i = 0; i < pts.length; i++) {
      requests += pts[i][1].requests;
      errors += pts[i][1].errors;
      while (pts[start][0] <= pts[i][0] - ERROR_WINDOW_S * 1000) {
        requests -= pts[start][1].requests;
        errors -= pts[start][1].errors;
        start++;
      }
      out.push([pts[i][0], requests > 0 ? (100 * errors) / requests : null]);
    }
    return out;
  };
  const markers = svc.events
    .filter((e) => r && e.rolloutId === r.id)
    .map((e) => ({ ms: e.atMs, label: markerLabel(e), className: `m-${e.action}` }));

  const legend = h(
    'div',
    { class: 'legend' },
    versions.map((v) => h('span', { class: `key v-${roleOf(v)}` }, h('i'), `${v} (${roleOf(v) === 'other' ? 'not routed' : roleOf(v)})`)),
    h('span', { class: 'key marker-key' }, h('i'), 'rollout events'),
  );
  const chart = (title, unit, value, format, floor) =>
    h(
      'figure',
      { class: 'chart-box' },
      h('figcaption', {}, title, h('span', { class: 'muted' }, unit)),
      lineChart({ title, series: series(value), markers, t0, t1, format, floor, width: narrow.matches ? 340 : 520 }),
    );
  return [
    legend,
    h(
      'div',
      { class: 'chart-grid' },
      chart('Requests', ' per second', plain('rps'), (v) => num(v), 1),
      chart('Error rate', ` over ${ERROR_WINDOW_S} s`, windowed, (v) => `${num(v)}%`, 1),
      chart('p50 latency', ' ms', plain('p50', 1000), (v) => num(v), 1),
      chart('p99 latency', ' ms', plain('p99', 1000), (v) => num(v), 1),
    ),
  ];
}

// On a phone a narrower drawing keeps the axis text at a readable size.
const narrow = window.matchMedia('(max-width: 640px)');
narrow.addEventListener('change', schedule);

function rank(role) {
  return { stable: 0, canary: 1, other: 2 }[role] ?? 3;
}

function markerLabel(e) {
  switch (e.action) {
    case 'begin':
    case 'advance':
    case 'approve':
      return pct(e.weight);
    case 'await_approval':
      return 'approval?';
    case 'fail':
      return 'rollback';
    default:
      return e.action;
  }
}

// ---- Timeline and history -------------------------------------------------------------------

function timeline(svc) {
  const events = [...svc.events].reverse().slice(0, 40);
  return [
    h('h3', { class: 'section-title' }, 'Events'),
    events.length
      ? h(
          'ol',
          { class: 'events', 'data-testid': 'events' },
          events.map((e) =>
            h(
              'li',
              { class: `event ev-${e.action}` },
              h('time', { datetime: new Date(e.atMs).toISOString() }, clockTime(e.atMs)),
              h('span', { class: 'ev-action' }, e.action),
              h('span', { class: 'ev-message' }, e.message),
              h('span', { class: 'ev-weight muted' }, pct(e.weight)),
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No events yet.'),
  ];
}

function history(svc) {
  const rows = [...svc.history].reverse();
  return [
    h('h3', { class: 'section-title' }, 'Rollout history'),
    rows.length
      ? h(
          'div',
          { class: 'table-wrap' },
          h(
            'table',
            { class: 'history', 'data-testid': 'history' },
            h('thead', {}, h('tr', {}, ['Started', 'Versions', 'Outcome', 'Took', 'Why'].map((t) => h('th', {}, t)))),
            h(
              'tbody',
              {},
              rows.map((r) =>
                h(
                  'tr',
                  { 'data-rollout': r.id },
                  h('td', { title: r.id }, dateTime(r.createdMs)),
                  h('td', {}, `${r.stable.version} → ${r.canary.version}`),
                  h('td', {}, h('span', { class: `badge phase-${r.phase}` }, PHASE[r.phase] ?? r.phase)),
                  h('td', { class: 'num', 'data-label': 'Took' }, isTerminal(r.phase) ? duration((r.updatedMs - r.createdMs) / 1000) : 'running'),
                  h('td', { class: 'why' }, r.reason ?? ''),
                ),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No rollouts yet.'),
  ];
}

// ---- Formatting -----------------------------------------------------------------------------

function num(x) {
  if (x == null || Number.isNaN(x)) return '—';
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 1e5) return x.toExponential(1);
  if (a >= 100) return String(Math.round(x));
  if (a >= 10) return x.toFixed(1).replace(/\.0$/, '');
  if (a >= 0.01) return x.toFixed(2).replace(/\.?0+$/, '');
  return x.toPrecision(1);
}

function pct(x) {
  return `${num(x)}%`;
}

function ratio(x) {
  if (x == null) return '—';
  if (x >= 10) return `${Math.round(x)}×`;
  return `${x >= 1 ? x.toFixed(1) : x.toFixed(2)}×`;
}

function latency(seconds) {
  return seconds < 1 ? `${num(seconds * 1000)} ms` : `${num(seconds)} s`;
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

function clockTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function dateTime(ms) {
  return new Date(ms).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// Keep "time in step" moving between server updates.
setInterval(() => state && document.visibilityState === 'visible' && schedule(), 1_000);
