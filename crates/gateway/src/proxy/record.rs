//! Phase 5, **record**: the one place a request's counters move.

use std::sync::atomic::Ordering::Relaxed;

use super::RequestCtx;
use crate::metrics::JudgeFacts;

/// Counts what the request did: the decision against the version it chose, the upstream
/// failures against the versions they happened on, a retry (the canary loses the request, the
/// judge counts it as the canary's error), and the response with its latency against the
/// version that served it. A request whose client went away before an answer counts no
/// response.
pub(super) fn record(ctx: &RequestCtx<'_>) {
    let (route, decision, outcome) = (&ctx.route, &ctx.decision, &ctx.outcome);
    let decided = route.target(decision.side);
    decided.stats.record_decision(decision.reason);
    // A new session counts for the version the rule assigned it to, even when a retry served
    // it elsewhere: the sample-ratio guard checks the rule's split, not where requests ended.
    if decision.new_session && route.users.first_sight(decision.key_hash) {
        decided.stats.record_new_session();
    }
    decided.stats.record_upstream_errors(&outcome.errors);
    let judge =
        JudgeFacts { bucket: decision.bucket, key_hash: decision.key_hash, slow_bucket: route.spec.slow_bucket };
    if let Some(stable_errors) = &outcome.retry {
        let metrics = &ctx.conn.service.shared().metrics;
        metrics
            .retries(ctx.conn.service.name(), version_name(decided), version_name(&route.stable))
            .fetch_add(1, Relaxed);
        decided.stats.record_moved_away(&decided.ranges, judge);
        route.stable.stats.record_upstream_errors(stable_errors);
    }
    let Some(status) = outcome.status else { return };
    let micros = ctx.started.elapsed().as_micros() as u64;
    let served = route.target(ctx.side);
    served.stats.record_response(&served.ranges, status.as_u16(), micros, judge);
}

fn version_name(target: &crate::service::VersionTarget) -> &str {
    target.header.to_str().unwrap_or("?")
}
