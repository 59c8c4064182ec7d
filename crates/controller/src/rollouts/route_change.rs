//! How a rollout transition changes a service's routing spec.

use std::time::Duration;

use canary_core::RouteSpec;
use canary_core::Weight;
use canary_core::policy::BREAKER_TRIPPED;
use canary_core::rollout::{Rollout, RouteChange};
use canary_core::spec::{DrainingSpec, RetiredSpec};

/// Applies a transition's routing change to `spec` (without bumping its generation).
///
/// The salt: a rollout keeps the salt in force when it starts — the gateways have been
/// counting its cohort under it since the previous rollout ended (the judge's cohort baseline)
/// — and the end of a rollout draws the next one, unless the service's config fixes it. A
/// release train's member takes the train's salt instead, so every member puts a user on the
/// same side; the spec names the train from then until the next rollout, so its cohort tokens
/// still reach a draining or retired version.
///
/// A rollback or an abort retires the canary for the service's `rollback_grace`, so the pages it
/// served can still load what only it has; a canary a local breaker tripped gets no grace, since
/// it fails hard (and a gateway whose own breaker did not see it would still send it requests).
pub fn apply(spec: &mut RouteSpec, change: &RouteChange, rollout: &Rollout, settings: &Settings<'_>) {
    match change {
        RouteChange::None => {}
        RouteChange::Canary { weight } => {
            let salt = rollout.train.as_ref().map_or_else(|| spec.salt_in_force().to_owned(), |t| t.salt.clone());
            spec.salt = Some(salt);
            spec.train = rollout.train.as_ref().map(|t| t.id.clone());
            spec.rollout_id = rollout.id.clone();
            spec.canary = Some(rollout.canary.clone());
            // A canary of the retired version's name takes its place; another leaves the grace.
            spec.retired = spec
                .retired
                .take()
                .filter(|r| r.until_ms > settings.now_ms && r.version.version != rollout.canary.version);
            spec.weight = *weight;
            spec.slow_bucket = settings.slow_bucket;
            spec.force_token = Some(format!("{:032x}", rand::random::<u128>()));
        }
        RouteChange::Weight(weight) => spec.weight = *weight,
        RouteChange::Promote => {
            if let Some(canary) = spec.canary.take() {
                let old = std::mem::replace(&mut spec.stable, canary);
                let until = settings.now_ms / 1000 + rollout.drain.0.as_secs();
                spec.draining = (!rollout.drain.0.is_zero()).then_some(DrainingSpec { version: old, until });
            }
            spec.weight = Weight::ZERO;
            spec.salt = Some(next_salt(settings.fixed_salt, &rollout.service));
            spec.force_token = None;
        }
        RouteChange::RemoveCanary => {
            spec.force_token = None;
            let grace = settings.rollback_grace.as_millis() as u64;
            let tripped = rollout.reason.as_deref().is_some_and(|r| r.starts_with(BREAKER_TRIPPED));
            if let Some(canary) = spec.canary.take()
                && grace > 0
                && !tripped
            {
                spec.retired = Some(RetiredSpec { version: canary, until_ms: settings.now_ms + grace });
            }
            spec.weight = Weight::ZERO;
            spec.salt = Some(next_salt(settings.fixed_salt, &rollout.service));
        }
    }
}

/// What a routing change needs besides the rollout.
pub struct Settings<'a> {
    /// The tail threshold's latency bucket, for a starting canary.
    pub slow_bucket: Option<u8>,
    /// The service's fixed salt from its config, if it has one.
    pub fixed_salt: Option<&'a str>,
    /// The time of the change.
    pub now_ms: u64,
    /// How long a rolled-back canary still serves its open pages.
    pub rollback_grace: Duration,
}

/// The salt of the service's next rollout.
fn next_salt(fixed: Option<&str>, service: &str) -> String {
    match fixed {
        Some(salt) => salt.to_owned(),
        None => format!("{service}-c{:016x}", rand::random::<u64>()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use canary_core::config::{HumanDuration, Upstreams, VersionConfig, VersionName};
    use canary_core::rollout::{Analysis, Phase};

    fn version(name: &str) -> VersionConfig {
        VersionConfig {
            version: VersionName::try_from(name.to_owned()).unwrap(),
            upstreams: Upstreams::try_from(vec!["127.0.0.1:1".to_owned()]).unwrap(),
        }
    }

    fn spec() -> RouteSpec {
        RouteSpec {
            rollout_id: "web-v1".into(),
            salt: None,
            stable: version("v1"),
            canary: None,
            weight: Weight::ZERO,
            draining: None,
            retired: None,
            generation: 1,
            slow_bucket: None,
            force_token: None,
            train: None,
        }
    }

    fn rollout() -> Rollout {
        Rollout {
            id: "web-19a".into(),
            service: "web".into(),
            stable: version("v1"),
            canary: version("v2"),
            steps: canary_core::rollout::parse_steps("10%/1m,100%").unwrap(),
            drain: HumanDuration(Duration::ZERO),
            max_step_wait: HumanDuration(Duration::from_secs(600)),
            analysis: Analysis::default(),
            phase: Phase::Pending,
            step: 0,
            step_started_ms: 0,
            step_banked_ms: 0,
            created_ms: 0,
            updated_ms: 0,
            transitions: 0,
            reason: None,
            train: None,
        }
    }

    fn settings(fixed_salt: Option<&str>) -> Settings<'_> {
        Settings { slow_bucket: Some(9), fixed_salt, now_ms: 0, rollback_grace: Duration::ZERO }
    }

    #[test]
    fn a_rollout_keeps_the_salt_its_cohort_was_counted_under_and_its_end_draws_the_next() {
        let mut spec = spec();
        let rollout = rollout();
        let counted_under = spec.salt_in_force().to_owned();
        apply(
            &mut spec,
            &RouteChange::Canary { weight: Weight::from_percent(10.0).unwrap() },
            &rollout,
            &settings(None),
        );
        assert_eq!(spec.rollout_id, "web-19a");
        assert_eq!(spec.salt_in_force(), counted_under, "the cohort is the one counted before");
        assert_eq!(spec.force_token.as_ref().map(String::len), Some(32), "the rollout's gates get a token");
        apply(&mut spec, &RouteChange::RemoveCanary, &rollout, &settings(None));
        assert_eq!(spec.force_token, None, "the token ends with its rollout");
        let next = spec.salt_in_force().to_owned();
        assert_ne!(next, counted_under, "the next rollout gets a cohort of its own");
        assert!(canary_core::names::check_id(&next, "salt").is_ok(), "{next}");
    }

    #[test]
    fn a_rollback_retires_the_canary_for_the_grace_unless_a_breaker_tripped_it() {
        let ten_pct = RouteChange::Canary { weight: Weight::from_percent(10.0).unwrap() };
        let grace = Settings { now_ms: 5_000, rollback_grace: Duration::from_secs(300), ..settings(None) };
        let rolled_back = |reason: &str| {
            let mut spec = spec();
            let rollout = Rollout { reason: Some(reason.to_owned()), ..rollout() };
            apply(&mut spec, &ten_pct, &rollout, &grace);
            apply(&mut spec, &RouteChange::RemoveCanary, &rollout, &grace);
            spec
        };
        let judged = rolled_back("WORSE: error rate");
        assert_eq!(judged.canary, None);
        let retired = judged.retired.clone().expect("a judged rollback retires the canary");
        assert_eq!((retired.version.version.as_str(), retired.until_ms), ("v2", 305_000));
        assert_eq!(rolled_back("local breaker tripped: canary failed 5 connections").retired, None);
        let mut no_grace = spec();
        apply(&mut no_grace, &ten_pct, &rollout(), &settings(None));
        apply(&mut no_grace, &RouteChange::RemoveCanary, &rollout(), &settings(None));
        assert_eq!(no_grace.retired, None, "rollback_grace = 0 retires nothing");
        // The same version deployed again takes the place of its retired self.
        let mut again = judged.clone();
        apply(&mut again, &ten_pct, &rollout(), &grace);
        assert_eq!(again.retired, None);
    }

    #[test]
    fn a_train_member_buckets_under_the_trains_salt_and_names_the_train_until_the_next_rollout() {
        let ten_pct = RouteChange::Canary { weight: Weight::from_percent(10.0).unwrap() };
        let train = canary_core::train::TrainRef {
            id: "train-19a".into(),
            salt: "train-19a-s1".into(),
            services: vec!["web".into(), "api".into()],
        };
        let member = Rollout { train: Some(train), ..rollout() };
        let mut spec = spec();
        apply(&mut spec, &ten_pct, &member, &settings(Some("web-fixed")));
        assert_eq!((spec.salt_in_force(), spec.train.as_deref()), ("train-19a-s1", Some("train-19a")));
        apply(&mut spec, &RouteChange::Promote, &member, &settings(None));
        assert_eq!(spec.train.as_deref(), Some("train-19a"), "the draining stable still takes the train's calls");
        assert_ne!(spec.salt_in_force(), "train-19a-s1");
        apply(&mut spec, &ten_pct, &rollout(), &settings(None));
        assert_eq!(spec.train, None, "a rollout of its own");
    }

    #[test]
    fn a_fixed_salt_stays() {
        let mut spec = RouteSpec { salt: Some("early-adopters".into()), ..spec() };
        let rollout = rollout();
        apply(
            &mut spec,
            &RouteChange::Canary { weight: Weight::from_percent(10.0).unwrap() },
            &rollout,
            &settings(Some("early-adopters")),
        );
        apply(&mut spec, &RouteChange::Promote, &rollout, &settings(Some("early-adopters")));
        assert_eq!(spec.salt_in_force(), "early-adopters");
    }
}
