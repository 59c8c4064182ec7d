// Owns the dashboard's one WebSocket and shares it with every tab.
//
// Loaded as a SharedWorker, one instance serves every tab of this origin: each tab is a
// MessagePort. Where SharedWorker does not exist the page loads this same script as a dedicated
// Worker, whose global scope is its only "port"; everything below works the same way.
//
// Ports do not tell anyone when their tab goes away (`beforeunload` and `pagehide` are not
// reliable, and a killed or crashed tab sends nothing), so the worker asks: every PING_MS it
// pings every port, and a port that has not answered for DEAD_MS is forgotten. When no port is
// left the socket is closed. The worker pings rather than the tabs because a background tab's
// timers may be throttled to once a minute, while its message handlers still run at once.
//
// Tab → worker:  {type:'hello', token}  register (again); answered with status and state
//                {type:'pong'}          alive
//                {type:'token', token}  a person entered the admin token: reconnect with it
//                {type:'bye'}           fast path on pagehide; the pings are the real check
// Worker → tab:  {type:'status', status, tabs, shared, retryInMs}
//                {type:'state', state}  a full state (after a snapshot, and on hello)
//                {type:'delta', msg}    one server message to apply to the tab's copy
//                {type:'ping'}

import { apply, emptyState } from './feed.js';

const PING_MS = 5_000;
const DEAD_MS = 15_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15_000;

const shared = typeof SharedWorkerGlobalScope !== 'undefined' && self instanceof SharedWorkerGlobalScope;

/** port → time of its last message. */
const tabs = new Map();
let socket = null;
let status = 'idle'; // idle | connecting | live | reconnecting | unauthorized
let attempt = 0;
let retryTimer = null;
let retryAt = 0;
let token = null;
let state = null;

function attach(port) {
  port.onmessage = (e) => fromTab(port, e.data);
}

if (shared) {
  self.onconnect = (e) => attach(e.ports[0]);
} else {
  attach(self);
}

function fromTab(port, msg) {
  switch (msg?.type) {
    case 'hello':
      tabs.set(port, Date.now());
      if (msg.token && msg.token !== token) {
        token = msg.token;
        if (status === 'unauthorized') connect();
      }
      port.postMessage(statusMessage());
      if (state) port.postMessage({ type: 'state', state });
      broadcast(statusMessage());
      if (status === 'idle') connect();
      break;
    case 'pong':
      if (tabs.has(port)) tabs.set(port, Date.now());
      break;
    case 'token':
      token = msg.token || null;
      connect();
      break;
    case 'bye':
      forget(port);
      break;
  }
}

function forget(port) {
  if (!tabs.delete(port)) return;
  if (tabs.size === 0) disconnect();
  else broadcast(statusMessage());
}

setInterval(() => {
  const now = Date.now();
  for (const [port, seen] of tabs) {
    if (now - seen > DEAD_MS) forget(port);
    else port.postMessage({ type: 'ping' });
  }
}, PING_MS);

function streamUrl() {
  const url = new URL('/api/v1/stream', self.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (socket) {
    const old = socket;
    socket = null;
    old.close(1000, 'reconnecting');
  }
  setStatus(attempt > 0 ? 'reconnecting' : 'connecting');
  const ws = new WebSocket(streamUrl());
  socket = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', token }));
  ws.onmessage = (e) => {
    if (ws !== socket) return;
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    if (msg.type === 'snapshot') {
      attempt = 0;
      state = apply(emptyState(), msg);
      broadcast({ type: 'state', state });
      setStatus('live');
    } else if (state) {
      apply(state, msg);
      broadcast({ type: 'delta', msg });
    }
  };
  ws.onclose = (e) => {
    if (ws !== socket) return;
    socket = null;
    if (e.code === 4401) {
      setStatus('unauthorized');
    } else if (tabs.size === 0) {
      setStatus('idle');
    } else {
      scheduleRetry();
    }
  };
}

function scheduleRetry() {
  // Exponential backoff with jitter, so a restarted server is not hit by every browser at once.
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  const delay = Math.round(base * (0.5 + Math.random() / 2));
  attempt += 1;
  retryAt = Date.now() + delay;
  retryTimer = setTimeout(connect, delay);
  setStatus('reconnecting');
}

function disconnect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  attempt = 0;
  if (socket) {
    const old = socket;
    socket = null;
    old.close(1000, 'no tab left');
  }
  setStatus('idle');
}

function statusMessage() {
  return {
    type: 'status',
    status,
    tabs: tabs.size,
    shared,
    retryInMs: status === 'reconnecting' && retryTimer ? Math.max(0, retryAt - Date.now()) : 0,
  };
}

function setStatus(next) {
  status = next;
  broadcast(statusMessage());
}

function broadcast(msg) {
  for (const port of tabs.keys()) port.postMessage(msg);
}
