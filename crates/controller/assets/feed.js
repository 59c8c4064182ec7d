// The live feed's state and the one function that applies a server message to it.
//
// The SharedWorker keeps a copy (so a tab that opens later gets the current state at once,
// without a round trip to the server) and every tab keeps its own copy, updated with the
// same deltas in the same order. Both use this module, so they cannot drift apart.
//
// State shape (plain objects and arrays, so it survives postMessage's structured clone):
//   { atMs, authRequired, role ('admin' | 'read': what the feed's token allows),
//     services: [{ name, routing, rollout, history: [rollout…], events: [event…] }],
//     metrics: [{ atMs, points: [{ service, version, role, requests, errors, rps,
//                                  errorRate, p50, p99 }] }] }

/** Ticks kept: 15 minutes at one a second, as the server keeps. */
export const MAX_TICKS = 900;
/** Events kept per service. */
export const MAX_EVENTS = 200;
/** Past rollouts kept per service. */
export const MAX_HISTORY = 20;

/** A state with nothing in it yet. */
export function emptyState() {
  return { atMs: 0, authRequired: false, role: 'admin', services: [], metrics: [] };
}

/**
 * Applies one server message to `state` (mutating it) and returns it. A `snapshot` replaces
 * everything; the other messages are deltas.
 */
export function apply(state, msg) {
  switch (msg.type) {
    case 'snapshot':
      return {
        atMs: msg.atMs,
        authRequired: msg.authRequired,
        role: msg.role ?? 'admin',
        services: msg.services.map((s) => ({ ...s, history: s.history ?? [], events: s.events ?? [] })),
        metrics: msg.metrics ?? [],
      };
    case 'rollout': {
      const svc = service(state, msg.service);
      if (!svc) return state;
      if (msg.rollout) {
        svc.rollout = msg.rollout;
        upsertHistory(svc, msg.rollout);
      }
      if (msg.routing) svc.routing = msg.routing;
      if (msg.event) addEvent(svc, msg.event);
      return state;
    }
    case 'judge': {
      const svc = service(state, msg.service);
      // A judge tick belongs to the active rollout; ignore a late one for an ended rollout.
      if (svc && msg.rollout && (!svc.rollout || svc.rollout.id === msg.rollout.id)) {
        if (!isTerminal(svc.rollout?.phase)) svc.rollout = msg.rollout;
      }
      return state;
    }
    case 'routing': {
      const svc = service(state, msg.service);
      if (svc && msg.routing) svc.routing = msg.routing;
      return state;
    }
    case 'metrics':
      state.metrics.push({ atMs: msg.atMs, points: msg.points });
      if (state.metrics.length > MAX_TICKS) state.metrics.splice(0, state.metrics.length - MAX_TICKS);
      state.atMs = msg.atMs;
      return state;
    default:
      return state;
  }
}

/** Whether a phase is final. */
export function isTerminal(phase) {
  return phase === 'promoted' || phase === 'aborted' || phase === 'failed';
}

function service(state, name) {
  return state.services.find((s) => s.name === name);
}

function upsertHistory(svc, rollout) {
  const i = svc.history.findIndex((r) => r.id === rollout.id);
  // History holds the durable records; the view's live extras (judge, weight) are not needed.
  const { judge: _judge, ...record } = rollout;
  if (i >= 0) svc.history[i] = record;
  else svc.history.push(record);
  if (svc.history.length > MAX_HISTORY) svc.history.splice(0, svc.history.length - MAX_HISTORY);
}

function addEvent(svc, event) {
  const seen = svc.events.some((e) => e.rolloutId === event.rolloutId && e.seq === event.seq);
  if (seen) return;
  svc.events.push(event);
  if (svc.events.length > MAX_EVENTS) svc.events.splice(0, svc.events.length - MAX_EVENTS);
}
