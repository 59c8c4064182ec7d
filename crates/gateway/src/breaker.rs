//! The local breaker: each gateway stops sending users to a canary that fails hard, at once
//! and on its own, without waiting for the controller.
//!
//! Every quarter second it compares the canary's and stable's counters over a sliding window.
//! It trips when the canary refuses connections with no response at all (a crashed canary), or
//! when its error ratio (5xx plus requests it took no connection for) is both above an absolute
//! floor and many times stable's, over a minimum number of requests, with failures of more than
//! one user and still without a cohort range holding most of them: one heavy, error-prone user
//! who happens to be most of a small canary's traffic does not trip it (a canary that fails
//! hard fails everyone). A tripped canary gets no new requests and its pins are ignored;
//! idempotent or unsent requests already go to stable.
//! The breaker closes again only when the canary changes (a new version or rollout), since the
//! controller fails the rollout as soon as it sees the trip.
//!
//! After a rollback it keeps watching the canary while the routing names it retired: the pages
//! it served still send it requests in the grace window, and a canary that starts failing hard
//! then is tripped like a live one. Rolled back, a canary keeps its name and rollout id, so the
//! window and a trip carry over from before the rollback.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use canary_core::config::BreakerConfig;

use crate::service::{Route, Service, VersionTarget};
use canary_core::metrics::VersionCounts;

const TICK: Duration = Duration::from_millis(250);

/// Counters of one instant, enough for the breaker's ratios.
#[derive(Debug, Clone, Default)]
struct Sample {
    canary_attempts: u64,
    canary_errors: u64,
    canary_answered: u64,
    canary_connect_failures: u64,
    /// How often the user behind the canary's latest error changed.
    canary_failing_user_changes: u64,
    stable_requests: u64,
    stable_errors: u64,
    /// The canary's attempts and errors per cohort range (empty when not counted).
    canary_ranges: Vec<(u64, u64)>,
}

impl Sample {
    fn of(canary: &VersionCounts, failing_user_changes: u64, stable: &VersionCounts) -> Sample {
        // A copy taken while a 5xx is being recorded can hold it in `responses` but not yet in
        // `judge_errors`: never fewer than none moved away.
        let moved_away = canary.judge_errors.saturating_sub(canary.server_errors());
        let ranges = canary.cohorts.first();
        Sample {
            canary_attempts: canary.requests() + moved_away,
            canary_errors: canary.judge_errors,
            canary_answered: canary.requests(),
            canary_connect_failures: canary.connect_failures(),
            canary_failing_user_changes: failing_user_changes,
            stable_requests: stable.requests(),
            stable_errors: stable.judge_errors,
            canary_ranges: ranges.map_or_else(Vec::new, |r| r.requests.iter().copied().zip(r.errors).collect()),
        }
    }

    /// The canary's and stable's counters now.
    fn now(canary: &VersionTarget, stable: &VersionTarget) -> Sample {
        Sample::of(&canary.counts_with_ranges(), canary.stats.failing_user_changes(), &stable.stats.counts())
    }
}

/// The canary's attempts and errors in the window without a cohort range that holds more than
/// half of its errors there, if one does and the canary served other ranges too.
fn without_dominant_range(oldest: &Sample, newest: &Sample) -> Option<(u64, u64)> {
    if newest.canary_ranges.len() != oldest.canary_ranges.len() {
        return None;
    }
    let window: Vec<(u64, u64)> = (newest.canary_ranges.iter().zip(&oldest.canary_ranges))
        .map(|(now, before)| (now.0.saturating_sub(before.0), now.1.saturating_sub(before.1)))
        .collect();
    let &(dominant_attempts, dominant_errors) = window.iter().max_by_key(|&&(_, errors)| errors)?;
    let errors_in_ranges: u64 = window.iter().map(|&(_, errors)| errors).sum();
    let served_others = window.iter().filter(|&&(attempts, _)| attempts > 0).count() > 1;
    if !served_others || 2 * dominant_errors <= errors_in_ranges {
        return None;
    }
    let attempts = newest.canary_attempts.saturating_sub(oldest.canary_attempts);
    let errors = newest.canary_errors.saturating_sub(oldest.canary_errors);
    Some((attempts.saturating_sub(dominant_attempts), errors.saturating_sub(dominant_errors)))
}

/// Why the breaker should trip, if it should. `last_answer` is the newest sample at which the
/// canary had just answered a request: failed connections since then, with no answer, mean it
/// is down, however well it did earlier in the window. On a `live` canary an error ratio trips
/// only on failures of more than one user, and must hold without a cohort range that holds
/// most of them (over half the minimum of requests): one heavy, error-prone user who is most of
/// a small canary's traffic is not a canary that fails hard, which fails everyone, and a trip
/// rolls the release back. A retired canary's trip only ends the open pages' grace early.
fn verdict(
    policy: &BreakerConfig,
    live: bool,
    oldest: &Sample,
    last_answer: &Sample,
    newest: &Sample,
) -> Option<String> {
    let d = |f: fn(&Sample) -> u64| f(newest).saturating_sub(f(oldest));
    let attempts = d(|s| s.canary_attempts);
    let errors = d(|s| s.canary_errors);
    let silent_failures = newest.canary_connect_failures.saturating_sub(last_answer.canary_connect_failures);
    if silent_failures >= policy.connect_failures && newest.canary_answered == last_answer.canary_answered {
        return Some(format!("canary failed {silent_failures} connections in a row and answered nothing since"));
    }
    if attempts < policy.min_requests || (live && d(|s| s.canary_failing_user_changes) < 2) {
        return None;
    }
    let stable_requests = d(|s| s.stable_requests);
    let stable_ratio = if stable_requests == 0 { 0.0 } else { d(|s| s.stable_errors) as f64 / stable_requests as f64 };
    let too_many = |errors: u64, attempts: u64| {
        let ratio = errors as f64 / attempts as f64;
        ratio >= policy.error_ratio && ratio >= policy.stable_factor * stable_ratio
    };
    let rest = if live { without_dominant_range(oldest, newest) } else { None };
    let without_one_group =
        rest.is_none_or(|(attempts, errors)| attempts >= policy.min_requests.div_ceil(2) && too_many(errors, attempts));
    (too_many(errors, attempts) && without_one_group).then(|| {
        format!(
            "canary error ratio {:.1}% over {attempts} requests against stable's {:.1}%",
            100.0 * errors as f64 / attempts as f64,
            100.0 * stable_ratio
        )
    })
}

/// Watches `service` until the task is dropped.
pub async fn watch(service: Arc<Service>, policy: BreakerConfig) {
    let window_ticks = (policy.window.0.as_millis() / TICK.as_millis()).max(1) as usize;
    let mut samples: VecDeque<Sample> = VecDeque::with_capacity(window_ticks + 1);
    let mut last_answer = Sample::default();
    let mut watched: Option<(String, String)> = None;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let route = service.route();
        let Some((canary, name, live)) = watched_canary(&route) else {
            watched = None;
            samples.clear();
            continue;
        };
        let identity = (route.spec.rollout_id.clone(), name.to_owned());
        if watched.as_ref() != Some(&identity) {
            // A new canary starts with a closed breaker and a window that begins when it got
            // its routing, so requests it failed before this first look still count.
            watched = Some(identity);
            samples.clear();
            last_answer = match &route.canary_since {
                // Who failed before this first look is not kept: those failures count, their
                // users do not.
                Some(since) => Sample::of(&since.0, canary.stats.failing_user_changes(), &since.1),
                None => Sample::now(canary, &route.stable),
            };
            samples.push_back(last_answer.clone());
            service.set_canary_open(true);
        }
        if !service.canary_open() {
            continue;
        }
        let sample = Sample::now(canary, &route.stable);
        if sample.canary_answered != last_answer.canary_answered {
            last_answer = sample.clone();
        }
        samples.push_back(sample);
        if samples.len() > window_ticks + 1 {
            samples.pop_front();
        }
        let (Some(oldest), Some(newest)) = (samples.front(), samples.back()) else {
            continue;
        };
        if let Some(why) = verdict(&policy, live, oldest, &last_answer, newest) {
            tracing::warn!(service = service.name(), "breaker tripped: {why}; canary traffic goes to stable");
            service.trip_canary(why);
        }
    }
}

/// The canary the breaker watches: the routed one (live), else the one retired by a rollback.
fn watched_canary(route: &Route) -> Option<(&VersionTarget, &str, bool)> {
    match (&route.canary, &route.table.canary) {
        (Some(target), Some(name)) => Some((target, name, true)),
        _ => {
            let retired = route.retired.as_ref().zip(route.table.retired.as_ref().map(|r| r.version.as_str()));
            retired.map(|(target, name)| (target, name, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shared;
    use crate::metrics::JudgeFacts;
    use canary_core::config::Config;

    fn sample(attempts: u64, errors: u64, answered: u64, refused: u64, stable: (u64, u64)) -> Sample {
        Sample {
            canary_attempts: attempts,
            canary_errors: errors,
            canary_answered: answered,
            canary_connect_failures: refused,
            canary_failing_user_changes: errors,
            stable_requests: stable.0,
            stable_errors: stable.1,
            canary_ranges: Vec::new(),
        }
    }

    #[test]
    fn a_crashed_canary_trips_on_refused_connections() {
        let policy = BreakerConfig::default();
        let zero = Sample::default();
        assert!(verdict(&policy, true, &zero, &zero, &sample(5, 5, 0, 5, (100, 0))).is_some());
        assert!(verdict(&policy, true, &zero, &zero, &sample(4, 4, 0, 4, (100, 0))).is_none());
        // Healthy for most of the window, then down: the failures since its last answer count.
        let healthy = sample(500, 0, 500, 0, (1000, 0));
        assert!(verdict(&policy, true, &zero, &healthy, &sample(506, 6, 500, 6, (1100, 0))).is_some());
        let answered_since = sample(506, 6, 501, 6, (1100, 0));
        assert!(verdict(&policy, true, &zero, &answered_since, &answered_since).is_none());
    }

    #[test]
    fn the_error_ratio_must_be_high_and_far_above_stable() {
        let policy = BreakerConfig::default();
        let zero = Sample::default();
        assert!(verdict(&policy, true, &zero, &zero, &sample(100, 30, 100, 0, (1000, 10))).is_some());
        assert!(
            verdict(&policy, true, &zero, &zero, &sample(100, 30, 100, 0, (1000, 100))).is_none(),
            "stable is as bad"
        );
        assert!(verdict(&policy, true, &zero, &zero, &sample(100, 20, 100, 0, (1000, 0))).is_none(), "below the floor");
        assert!(verdict(&policy, true, &zero, &zero, &sample(10, 10, 10, 0, (1000, 0))).is_none(), "too few requests");
    }

    #[test]
    fn counts_copied_mid_update_do_not_underflow() {
        // A 5xx already in `responses`, not yet in `judge_errors`.
        let canary = VersionCounts { responses: [0, 10, 0, 0, 1], judge_errors: 0, ..VersionCounts::default() };
        let sample = Sample::of(&canary, 0, &VersionCounts::default());
        assert_eq!(sample.canary_attempts, 11);
        assert_eq!(sample.canary_answered, 11);
    }

    #[test]
    fn only_the_window_counts() {
        let policy = BreakerConfig::default();
        let before = sample(1000, 900, 1000, 0, (1000, 0));
        assert!(verdict(&policy, true, &before, &before, &sample(1100, 900, 1100, 0, (2000, 0))).is_none());
    }

    fn service_with_canary() -> Arc<Service> {
        let config = Config::from_toml(
            r#"
[[service]]
name = "web"
listen = "127.0.0.1:0"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
canary = { version = "v2", upstreams = ["127.0.0.1:9002"] }
weight = 50
breaker = { window = "10s", min_requests = 20, error_ratio = 0.25 }
"#,
        )
        .unwrap();
        Arc::new(Service::new(&config.services[0], true, Arc::new(Shared::default())))
    }

    /// The facts of a request of the one user in `bucket`.
    fn user(bucket: u16) -> JudgeFacts {
        JudgeFacts { bucket, key_hash: u64::from(bucket), slow_bucket: None }
    }

    /// The canary fails `requests` requests, each of a user of another cohort range.
    fn canary_fails(service: &Service, requests: usize) {
        let route = service.route();
        let canary = route.canary.as_ref().unwrap();
        for i in 0..requests {
            let bucket = (i * 100 % 10_000) as u16;
            canary.stats.record_response(&canary.ranges, 503, 1_000, user(bucket));
        }
    }

    /// `requests` requests of the user in `bucket`, every `fail_every`-th of them failing.
    fn one_user(service: &Service, bucket: u16, requests: usize, fail_every: usize) {
        let route = service.route();
        let canary = route.canary.as_ref().unwrap();
        for i in 0..requests {
            let status = if (i + 1) % fail_every == 0 { 503 } else { 200 };
            canary.stats.record_response(&canary.ranges, status, 1_000, user(bucket));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_error_prone_user_who_is_most_of_the_canary_does_not_trip_it() {
        // A returning heavy user, held on stable until this rollout's salt put it on the
        // canary, fails every other request in the window; then two ordinary users come, and
        // one of them fails once.
        let service = service_with_canary();
        let breaker = tokio::spawn(watch(service.clone(), service.breaker().clone()));
        pass(TICK).await;
        one_user(&service, 300, 30, 2);
        pass(Duration::from_secs(1)).await;
        assert!(service.canary_open(), "one user's failures: {:?}", service.trip_reason());
        one_user(&service, 700, 6, 1_000);
        one_user(&service, 900, 5, 1_000);
        one_user(&service, 900, 1, 1);
        pass(Duration::from_secs(1)).await;
        assert!(service.canary_open(), "most failures from one range: {:?}", service.trip_reason());
        // Failures from other users as well: the canary fails everyone.
        one_user(&service, 700, 6, 2);
        one_user(&service, 900, 6, 2);
        pass(TICK).await;
        assert!(!service.canary_open(), "the rest fails too");
        breaker.abort();
    }

    /// Lets `time` pass on the paused clock one breaker tick at a time, letting the breaker
    /// look after each.
    async fn pass(time: Duration) {
        let mut left = time;
        while !left.is_zero() {
            let step = left.min(TICK);
            tokio::time::advance(step).await;
            tokio::task::yield_now().await;
            left -= step;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_count_only_while_they_are_in_the_window() {
        let service = service_with_canary();
        let breaker = tokio::spawn(watch(service.clone(), service.breaker().clone()));
        pass(TICK).await;
        canary_fails(&service, 15);
        pass(Duration::from_secs(1)).await;
        assert!(service.canary_open(), "15 requests are fewer than min_requests");
        pass(Duration::from_secs(10)).await;
        canary_fails(&service, 15);
        pass(Duration::from_secs(1)).await;
        assert!(service.canary_open(), "the first 15 failures have left the 10 s window");
        canary_fails(&service, 10);
        pass(TICK).await;
        assert!(!service.canary_open(), "25 failures within the window trip the breaker");
        assert!(service.trip_reason().unwrap().contains("over 25 requests"), "{:?}", service.trip_reason());
        breaker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_retired_canary_that_fails_in_its_grace_window_is_tripped() {
        let service = service_with_canary();
        let breaker = tokio::spawn(watch(service.clone(), service.breaker().clone()));
        pass(TICK).await;
        let mut spec = service.route().spec.clone();
        let canary = spec.canary.take().unwrap();
        spec.weight = canary_core::Weight::ZERO;
        spec.retired = Some(canary_core::spec::RetiredSpec { version: canary, until_ms: u64::MAX });
        spec.generation += 1;
        service.apply(spec).unwrap();
        pass(TICK).await;
        let route = service.route();
        let retired = route.retired.as_ref().unwrap();
        for i in 0..25 {
            let bucket = i * 100;
            retired.stats.record_response(&retired.ranges, 503, 1_000, user(bucket));
        }
        pass(TICK).await;
        assert!(!service.canary_open(), "the open pages' failures trip the retired canary");
        breaker.abort();
    }
}
