//! The key layout, in one place so the controller, the gateways and operators agree.
//!
//! ```text
//! /canary/services/<service>/routing      routing snapshot the gateways follow
//! /canary/rollouts/<service>/<rollout id> rollout record (phase, step, weights)
//! /canary/events/<service>/<seq>          event log, seq zero-padded to 20 digits
//! /canary/events/<service>/<rollout>/<n>  a rollout's events, n zero-padded to 8 digits
//! /canary/locks/<service>/rollout         the active rollout's id: one rollout per service
//! /canary/judges/<service>/<rollout>      the judge's evidence, saved every tick
//! /canary/team-judges/<service>/<rollout> the team metrics' evidence, saved every tick
//! /canary/secrets/pin                     the pin-signing secret shared by every gateway
//! /canary/leaders/<election>              etcd leader key, bound to the leader's lease
//! /canary/notify/<sink>/cursor            the last event a notification sink is done with
//! ```
//!
//! Service names and rollout ids follow `canary_core::names::check_id` (letters, digits, `_`,
//! `-`), so they never contain `/` and one service's prefix never matches another's.

/// Root of everything Sticky Canary stores.
pub const ROOT: &str = "/canary/";

/// Prefix of every service's routing snapshot: gateways watch this.
pub const SERVICES: &str = "/canary/services/";

/// Prefix of the leader keys (etcd backend).
pub const LEADERS: &str = "/canary/leaders/";

/// The routing snapshot of `service`.
pub fn routing(service: &str) -> String {
    format!("{SERVICES}{service}/routing")
}

/// Prefix of every rollout record of `service`.
pub fn rollouts(service: &str) -> String {
    format!("/canary/rollouts/{service}/")
}

/// The record of rollout `id` of `service`.
pub fn rollout(service: &str, id: &str) -> String {
    format!("/canary/rollouts/{service}/{id}")
}

/// Prefix of every service's event log: notifications follow it.
pub const EVENTS: &str = "/canary/events/";

/// Where notification sink `sink` keeps its delivered cursor.
pub fn notify_cursor(sink: &str) -> String {
    format!("/canary/notify/{sink}/cursor")
}

/// Prefix of the event log of `service`.
pub fn events(service: &str) -> String {
    format!("/canary/events/{service}/")
}

/// Event number `seq` of `service`. Zero-padded because both backends list in byte order,
/// and the log must list in the order it was written.
pub fn event(service: &str, seq: u64) -> String {
    format!("/canary/events/{service}/{seq:020}")
}

/// The lock that keeps a second rollout of `service` from starting while one is active; its
/// value is the active rollout's id.
pub fn rollout_lock(service: &str) -> String {
    format!("/canary/locks/{service}/rollout")
}

/// Event `seq` of rollout `rollout_id` of `service`. Rollout ids sort by creation time, so the
/// whole service's log lists in order under [`events`].
pub fn rollout_event(service: &str, rollout_id: &str, seq: u64) -> String {
    format!("/canary/events/{service}/{rollout_id}/{seq:08}")
}

/// The judge's evidence of rollout `rollout_id` of `service`, saved every tick so that a
/// restarted or new leader continues with it.
pub fn judge(service: &str, rollout_id: &str) -> String {
    format!("/canary/judges/{service}/{rollout_id}")
}

/// The evidence of rollout `rollout_id`'s team metrics (the team's own Prometheus queries),
/// saved every tick beside the judge's.
pub fn team_judge(service: &str, rollout_id: &str) -> String {
    format!("/canary/team-judges/{service}/{rollout_id}")
}

/// The secret that signs session pins, shared by every gateway of the store.
pub const PIN_SECRET: &str = "/canary/secrets/pin";

/// The leader key of `election`.
pub fn leader(election: &str) -> String {
    format!("{LEADERS}{election}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_list_in_the_order_they_were_written() {
        let mut keys = [event("web", 10), event("web", 9), event("web", 100)];
        keys.sort();
        assert_eq!(keys, [event("web", 9), event("web", 10), event("web", 100)]);
        assert_eq!(event("web", 7), "/canary/events/web/00000000000000000007");
    }

    #[test]
    fn one_service_prefix_never_matches_another() {
        assert!(!routing("webx").starts_with(&format!("{SERVICES}web/")));
        assert!(rollout("web", "r1").starts_with(&rollouts("web")));
    }
}
