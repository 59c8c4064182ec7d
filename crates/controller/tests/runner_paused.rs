//! The rollout runner on tokio's paused clock: its one-second ticks pass at once, so a test
//! drives a rollout through the real controller and store tick by tick, with counters it sets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use canary_core::api::StartRollout;
use canary_core::rollout::{Analysis, Phase};
use support::{SetCounts, state_with};

fn rollout_of_v3() -> StartRollout {
    serde_json::from_value(serde_json::json!({
        "version": "v3",
        "upstreams": ["127.0.0.1:9"],
        "steps": "10%/1h,100%",
    }))
    .unwrap()
}

/// Starts the controller's leadership and a rollout of v3; returns once the rollout runs.
async fn leading_with_a_rollout(source: &Arc<SetCounts>) -> (tempfile::TempDir, Arc<canary_controller::Controller>) {
    let dir = tempfile::tempdir().unwrap();
    let controller = state_with(dir.path(), None, source.clone()).await.controller;
    controller.spawn_leader();
    while !controller.is_leading() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let request = StartRollout { analysis: Some(Analysis::default()), ..rollout_of_v3() };
    controller.start("web", request).await.unwrap();
    (dir, controller)
}

async fn phase(controller: &canary_controller::Controller) -> Phase {
    controller.current_or_latest("web").await.unwrap().rollout.phase
}

#[tokio::test(start_paused = true)]
async fn a_canary_with_ten_times_the_errors_is_rolled_back_within_seconds_of_ticks() {
    let source = Arc::new(SetCounts::default());
    let (_dir, controller) = leading_with_a_rollout(&source).await;
    let mut seconds = 0;
    while phase(&controller).await == Phase::Progressing && seconds < 120 {
        source.add("v1", 90, 1);
        source.add("v3", 10, 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        seconds += 1;
    }
    let view = controller.current_or_latest("web").await.unwrap();
    assert_eq!(view.rollout.phase, Phase::Failed, "{:?}", view.rollout.reason);
    assert!(view.rollout.reason.as_deref().unwrap().contains("error rate"), "{:?}", view.rollout.reason);
    assert!(seconds <= 60, "rolled back only after {seconds} ticks");
}

#[tokio::test(start_paused = true)]
async fn a_tripped_breaker_fails_the_rollout_at_the_next_tick_and_healthy_counts_hold_it() {
    let source = Arc::new(SetCounts::default());
    let (_dir, controller) = leading_with_a_rollout(&source).await;
    for _ in 0..30 {
        source.add("v1", 90, 0);
        source.add("v3", 10, 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(phase(&controller).await, Phase::Progressing, "the hour's hold keeps a healthy canary at its step");
    source.trip("canary failed 5 connections in a row");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = controller.current_or_latest("web").await.unwrap();
    assert_eq!(view.rollout.phase, Phase::Failed);
    assert_eq!(view.rollout.reason.as_deref(), Some("local breaker tripped: canary failed 5 connections in a row"));
}
