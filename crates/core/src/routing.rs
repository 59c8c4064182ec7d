//! The routing decision: which version one request goes to, and what pin it leaves behind.
//!
//! Order of precedence, for every request:
//!
//! 1. a trusted `x-canary-force` override (QA, test suites) — never pinned;
//! 2. the side a verified cohort token of this table's release train names: a call from another
//!    service of the train, for a user that service already placed ([`crate::train`]) — never
//!    pinned, never counted as a new user;
//! 3. a valid session pin whose version is still routable, unless the request is a session
//!    boundary (a top-level document navigation), where nothing already loaded can break;
//! 4. the bucket rule: canary iff `bucket(salt, key) < weight_bp`.
//!
//! A version is routable while it is the stable version, the canary at a weight above zero
//! whose local breaker is closed, or the previous stable inside its drain window after a
//! promotion. The decision reads one immutable [`RoutingTable`] and allocates nothing.
//!
//! A rolled-back canary ([`Retired`]) is not routable, but inside its grace window a `GET` or
//! `HEAD` pinned to it that is *not* a page load still goes to it while its breaker is closed: the
//! pages it served keep loading their chunks and data from the version that has them, and
//! their next page load moves to stable. Every request whose pin names a version the table no
//! longer has (a rolled-back canary, with or without a grace window, or a drained stable) is
//! marked ([`Decision::version_gone`]) so the page can learn that its version is gone.

use crate::pin::{Pin, PinKey};
use crate::weight::Weight;

/// Which of a table's versions a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The current stable version.
    Stable,
    /// The canary under test.
    Canary,
    /// The previous stable version, serving the sessions pinned to it while it drains.
    Draining,
    /// A rolled-back canary, serving the pages it already served during its grace window.
    Retired,
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A trusted override header chose.
    Forced,
    /// The session pin chose.
    Pinned,
    /// The bucket rule chose.
    Bucket,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 3] = [Reason::Forced, Reason::Pinned, Reason::Bucket];

    /// Its position in [`Reason::ALL`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label value of [`crate::metrics::ROUTING_DECISIONS`].
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::Pinned => "pinned",
            Reason::Bucket => "bucket",
        }
    }
}

/// What the response should do with the session pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinAction {
    /// Leave the client's pin as it is.
    Keep,
    /// Set a fresh pin for the chosen version.
    Issue,
}

/// A forced version from a trusted override header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    /// `x-canary-force: stable`.
    Stable,
    /// `x-canary-force: canary`.
    Canary,
}

/// The previous stable version after a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draining {
    /// Its version name.
    pub version: String,
    /// Unix time (seconds) at which its pinned sessions move to the new stable.
    pub until: u64,
}

/// A canary just rolled back: its open pages' requests still reach it until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    /// Its version name.
    pub version: String,
    /// Unix time (milliseconds) at which its grace window ends.
    pub until_ms: u64,
}

/// One immutable routing table of a service: what every request of a snapshot sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    /// The rollout this table belongs to; pins name it.
    pub rollout_id: String,
    /// Salt of the bucket hash (the rollout id unless a service fixes it).
    pub salt: String,
    /// The stable version's name.
    pub stable: String,
    /// The canary's name, if a canary is deployed.
    pub canary: Option<String>,
    /// Share of users sent to the canary.
    pub weight: Weight,
    /// The previous stable, while it drains.
    pub draining: Option<Draining>,
    /// The canary last rolled back, while its open pages finish loading.
    pub retired: Option<Retired>,
    /// The release train of the rollout, if it is one: cohort tokens of this train are honoured.
    pub train: Option<String>,
}

/// What is known about one request when its version is chosen.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The user key (from a header, a cookie, or the minted anonymous id).
    pub key: &'a [u8],
    /// The `canary_pin` cookie value, if any.
    pub pin: Option<&'a [u8]>,
    /// A trusted override, if any.
    pub force: Option<Force>,
    /// The side a verified cohort token of the table's train names, if the request carries one.
    pub cohort: Option<Side>,
    /// Whether the request is a top-level document navigation.
    pub boundary: bool,
    /// Whether the request only reads (`GET`, `HEAD`): only these of an open page reach a
    /// rolled-back canary during its grace window.
    pub read_only: bool,
    /// Whether the canary's local breaker lets requests through. After a rollback it still
    /// says how the rolled-back canary last fared: a tripped one gets no grace.
    pub canary_healthy: bool,
    /// Unix time in seconds.
    pub now: u64,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Where the request goes.
    pub side: Side,
    /// Why.
    pub reason: Reason,
    /// What to do with the pin cookie.
    pub pin: PinAction,
    /// The user's bucket under this table's salt (also for pinned and forced requests).
    pub bucket: u16,
    /// The full 64-bit hash the bucket came from, for counting distinct users.
    pub key_hash: u64,
    /// Whether this request is the user's first assignment *by the bucket rule* in this
    /// rollout: decided by the bucket, with no pin of this rollout. The sample-ratio guard
    /// compares these against the weight, so only they may count: a session pinned before the
    /// rollout (a busy site always has some) follows its pin to stable, which says nothing about
    /// whether the rule splits users as the weight says.
    pub new_session: bool,
    /// Whether the request's pin names a version the table no longer has (a rolled-back
    /// canary, an old stable whose drain window ended): the page that sent it runs a version
    /// that is gone, and should load itself again at its next chance.
    pub version_gone: bool,
}

/// A pin older than this (of its TTL) is re-issued, so the TTL slides without signing a new
/// pin on every response.
pub const PIN_REFRESH_SECS: u64 = 60;

impl RoutingTable {
    /// A table with only a stable version.
    pub fn stable_only(rollout_id: &str, stable: &str) -> RoutingTable {
        RoutingTable {
            rollout_id: rollout_id.to_owned(),
            salt: rollout_id.to_owned(),
            stable: stable.to_owned(),
            canary: None,
            weight: Weight::ZERO,
            draining: None,
            retired: None,
            train: None,
        }
    }

    /// Name of the version a side refers to, if the table has it.
    pub fn version(&self, side: Side) -> Option<&str> {
        match side {
            Side::Stable => Some(&self.stable),
            Side::Canary => self.canary.as_deref(),
            Side::Draining => self.draining.as_ref().map(|d| d.version.as_str()),
            Side::Retired => self.retired.as_ref().map(|r| r.version.as_str()),
        }
    }

    /// Whether `version` is the rolled-back canary (and not also a version the table routes).
    fn is_retired(&self, version: &[u8]) -> bool {
        self.retired.as_ref().is_some_and(|r| r.version.as_bytes() == version)
            && self.stable.as_bytes() != version
            && self.canary.as_deref().is_none_or(|c| c.as_bytes() != version)
    }

    /// Whether `version` is gone: neither stable, nor the canary (at any weight, tripped or
    /// not), nor a draining stable inside its window.
    fn is_gone(&self, version: &[u8], now: u64) -> bool {
        let draining = self.draining.as_ref().is_some_and(|d| d.version.as_bytes() == version && now < d.until);
        self.stable.as_bytes() != version && self.canary.as_deref().is_none_or(|c| c.as_bytes() != version) && !draining
    }

    /// Whether a page pinned to `version` may still load from it: the rolled-back canary, inside
    /// its grace window, its breaker closed.
    fn in_grace(&self, version: &[u8], canary_open: bool, now: u64) -> bool {
        canary_open
            && self.is_retired(version)
            && self.retired.as_ref().is_some_and(|r| now.saturating_mul(1000) < r.until_ms)
    }

    /// Where a call carrying a cohort token for `side` goes: the same side while this table has
    /// it, else stable. The caller's gateway chose the side under the train's shared salt and
    /// plan, so this table has it unless a breaker tripped here or a window just ended.
    fn cohort_side(&self, side: Side, weighted: bool, facts: &RequestFacts<'_>) -> Side {
        let draining = self.draining.as_ref().is_some_and(|d| facts.now < d.until);
        let in_grace = |version: &str| self.in_grace(version.as_bytes(), facts.canary_healthy, facts.now);
        let retired = self.retired.as_ref().is_some_and(|r| facts.read_only && in_grace(&r.version));
        match side {
            Side::Canary if weighted => Side::Canary,
            Side::Draining if draining => Side::Draining,
            Side::Canary | Side::Retired if retired => Side::Retired,
            _ => Side::Stable,
        }
    }

    /// The side a pinned version maps to, if it is still routable.
    fn routable(&self, version: &[u8], canary_open: bool, now: u64) -> Option<Side> {
        if version == self.stable.as_bytes() {
            return Some(Side::Stable);
        }
        if canary_open && self.canary.as_deref().is_some_and(|c| c.as_bytes() == version) {
            return Some(Side::Canary);
        }
        match &self.draining {
            Some(d) if d.version.as_bytes() == version && now < d.until => Some(Side::Draining),
            _ => None,
        }
    }
}

/// Chooses the version of one request. See the module documentation for the rules.
#[inline]
pub fn decide(table: &RoutingTable, pins: &PinKey, pin_ttl: u64, facts: &RequestFacts<'_>) -> Decision {
    let key_hash = crate::bucket::hash(table.salt.as_bytes(), facts.key);
    let bucket = (key_hash % u64::from(crate::bucket::BUCKETS)) as u16;
    let canary_open = table.canary.is_some() && facts.canary_healthy;
    let weighted = canary_open && table.weight.basis_points() > 0;
    // An override or a train's cohort token chooses outright: nothing to pin, nobody new to count.
    let chosen = match (facts.force, facts.cohort) {
        (Some(Force::Canary), _) if canary_open => Some((Side::Canary, Reason::Forced)),
        (Some(_), _) => Some((Side::Stable, Reason::Forced)),
        (None, Some(side)) => Some((table.cohort_side(side, weighted, facts), Reason::Pinned)),
        (None, None) => None,
    };
    if let Some((side, reason)) = chosen {
        let (pin, new_session, version_gone) = (PinAction::Keep, false, false);
        return Decision { side, reason, pin, bucket, key_hash, new_session, version_gone };
    }
    let pin: Option<Pin<'_>> = facts.pin.and_then(|v| pins.verify(v, facts.now));
    let this_rollout = pin.is_some_and(|p| p.rollout_id == table.rollout_id.as_bytes());
    let fresh = |p: &Pin<'_>| p.expires >= facts.now + pin_ttl.saturating_sub(PIN_REFRESH_SECS);
    let version_gone = pin.is_some_and(|p| table.is_gone(p.version, facts.now));
    if let Some(pin) = pin
        && !facts.boundary
    {
        let refresh = if this_rollout && fresh(&pin) { PinAction::Keep } else { PinAction::Issue };
        let pinned = |side, pin| Decision {
            side,
            reason: Reason::Pinned,
            pin,
            bucket,
            key_hash,
            new_session: false,
            version_gone,
        };
        if let Some(side) = table.routable(pin.version, weighted, facts.now) {
            return pinned(side, refresh);
        }
        if table.in_grace(pin.version, facts.canary_healthy, facts.now) {
            // An open page of the rolled-back canary: its reads still go there; its writes go to
            // stable without moving its pin, so its next chunk still finds the build that has it.
            return if facts.read_only {
                pinned(Side::Retired, refresh)
            } else {
                pinned(Side::Stable, PinAction::Keep)
            };
        }
    }
    let side = if weighted && bucket < table.weight.basis_points() { Side::Canary } else { Side::Stable };
    let unchanged = pin
        .is_some_and(|p| table.version(side).is_some_and(|v| v.as_bytes() == p.version) && this_rollout && fresh(&p));
    let action = if unchanged { PinAction::Keep } else { PinAction::Issue };
    // While a breaker holds traffic off the canary the rule does not decide, so nobody counts.
    let by_the_rule = !this_rollout && (facts.canary_healthy || table.canary.is_none());
    Decision { side, reason: Reason::Bucket, pin: action, bucket, key_hash, new_session: by_the_rule, version_gone }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 1800;
    const NOW: u64 = 1_000_000;

    fn table(weight_pct: f64) -> RoutingTable {
        RoutingTable {
            canary: Some("v2".into()),
            weight: Weight::from_percent(weight_pct).unwrap(),
            ..RoutingTable::stable_only("web-1", "v1")
        }
    }

    fn facts<'a>(key: &'a [u8], pin: Option<&'a [u8]>) -> RequestFacts<'a> {
        RequestFacts {
            key,
            pin,
            force: None,
            cohort: None,
            boundary: false,
            read_only: true,
            canary_healthy: true,
            now: NOW,
        }
    }

    fn keys() -> impl Iterator<Item = String> {
        (0..10_000).map(|i| format!("user-{i}"))
    }

    #[test]
    fn raising_the_weight_only_moves_users_to_the_canary() {
        let key = PinKey::new(b"k", "web");
        let steps = [0.0, 1.0, 5.0, 25.0, 50.0, 100.0];
        let mut previous: Vec<Side> = keys().map(|_| Side::Stable).collect();
        for w in steps {
            let t = table(w);
            let now: Vec<Side> = keys().map(|k| decide(&t, &key, TTL, &facts(k.as_bytes(), None)).side).collect();
            for (before, after) in previous.iter().zip(&now) {
                assert!(!(*before == Side::Canary && *after == Side::Stable), "moved back at {w}%");
            }
            let share = now.iter().filter(|s| **s == Side::Canary).count() as f64 / 100.0;
            assert!((share - w).abs() <= 1.0, "share {share} at weight {w}");
            previous = now;
        }
    }

    #[test]
    fn a_pin_holds_across_a_weight_rise_until_a_navigation() {
        let key = PinKey::new(b"k", "web");
        let t50 = table(50.0);
        let user = keys()
            .find(|k| {
                decide(&table(10.0), &key, TTL, &facts(k.as_bytes(), None)).side == Side::Stable
                    && decide(&t50, &key, TTL, &facts(k.as_bytes(), None)).side == Side::Canary
            })
            .unwrap();
        let pin = key.sign("web-1", "v1", NOW + TTL);
        let d = decide(&t50, &key, TTL, &facts(user.as_bytes(), Some(pin.as_bytes())));
        assert_eq!((d.side, d.reason, d.pin), (Side::Stable, Reason::Pinned, PinAction::Keep));
        let nav = RequestFacts { boundary: true, ..facts(user.as_bytes(), Some(pin.as_bytes())) };
        let d = decide(&t50, &key, TTL, &nav);
        assert_eq!((d.side, d.reason, d.pin), (Side::Canary, Reason::Bucket, PinAction::Issue));
    }

    #[test]
    fn pins_to_a_zero_weight_or_tripped_canary_are_ignored() {
        let key = PinKey::new(b"k", "web");
        let pin = key.sign("web-1", "v2", NOW + TTL);
        let d = decide(&table(0.0), &key, TTL, &facts(b"u", Some(pin.as_bytes())));
        assert_eq!((d.side, d.reason, d.version_gone), (Side::Stable, Reason::Bucket, false));
        let tripped = RequestFacts { canary_healthy: false, ..facts(b"u", Some(pin.as_bytes())) };
        assert_eq!(decide(&table(100.0), &key, TTL, &tripped).side, Side::Stable);
    }

    #[test]
    fn only_a_first_assignment_by_the_bucket_counts_as_a_new_session() {
        let key = PinKey::new(b"k", "web");
        let t = table(50.0);
        // No pin: the rule assigns the user, a new session of this rollout.
        assert!(decide(&t, &key, TTL, &facts(b"u", None)).new_session);
        // A pin of this rollout: a returning session.
        let ours = key.sign("web-1", "v1", NOW + TTL);
        assert!(!decide(&t, &key, TTL, &facts(b"u", Some(ours.as_bytes()))).new_session);
        // A stable pin from before the rollout: the session follows it, which says nothing
        // about the split the rule makes, so it does not count either.
        let earlier = key.sign("web-0", "v1", NOW + TTL);
        let d = decide(&t, &key, TTL, &facts(b"u", Some(earlier.as_bytes())));
        assert_eq!((d.side, d.reason, d.new_session), (Side::Stable, Reason::Pinned, false));
        // Forced requests never count, nor users sent to stable because a breaker tripped.
        let forced = RequestFacts { force: Some(Force::Canary), ..facts(b"u", None) };
        assert!(!decide(&t, &key, TTL, &forced).new_session);
        let tripped = RequestFacts { canary_healthy: false, ..facts(b"u", None) };
        assert!(!decide(&t, &key, TTL, &tripped).new_session);
    }

    #[test]
    fn stable_pins_stay_on_stable_at_full_weight() {
        let key = PinKey::new(b"k", "web");
        let pin = key.sign("web-1", "v1", NOW + TTL);
        let d = decide(&table(100.0), &key, TTL, &facts(b"u", Some(pin.as_bytes())));
        assert_eq!(d.side, Side::Stable);
    }

    #[test]
    fn forged_and_expired_pins_fall_back_to_the_bucket() {
        let key = PinKey::new(b"k", "web");
        let forged = PinKey::new(b"evil", "web").sign("web-1", "v2", NOW + TTL);
        let expired = key.sign("web-1", "v2", NOW - 1);
        for pin in [forged, expired] {
            let d = decide(&table(0.01), &key, TTL, &facts(b"user-1", Some(pin.as_bytes())));
            assert_eq!(d.reason, Reason::Bucket);
        }
    }

    #[test]
    fn a_draining_stable_serves_its_pins_until_the_window_ends() {
        let key = PinKey::new(b"k", "web");
        let mut t = RoutingTable::stable_only("web-2", "v2");
        t.draining = Some(Draining { version: "v1".into(), until: NOW + 10 });
        let pin = key.sign("web-1", "v1", NOW + TTL);
        let d = decide(&t, &key, TTL, &facts(b"u", Some(pin.as_bytes())));
        assert_eq!((d.side, d.pin), (Side::Draining, PinAction::Issue));
        assert!(!d.version_gone);
        let later = RequestFacts { now: NOW + 10, ..facts(b"u", Some(pin.as_bytes())) };
        let d = decide(&t, &key, TTL, &later);
        assert_eq!((d.side, d.version_gone), (Side::Stable, true));
    }

    #[test]
    fn a_cohort_token_sends_the_call_to_the_side_the_callers_gateway_chose() {
        let key = PinKey::new(b"k", "api");
        let cohort = |side, t: &RoutingTable, f: RequestFacts<'_>| {
            decide(t, &key, TTL, &RequestFacts { cohort: Some(side), ..f })
        };
        // At 10 % almost every key buckets to stable; the caller's side wins, and is not counted.
        let t = table(10.0);
        for user in keys().take(200) {
            let d = cohort(Side::Canary, &t, facts(user.as_bytes(), None));
            assert_eq!(
                (d.side, d.reason, d.pin, d.new_session),
                (Side::Canary, Reason::Pinned, PinAction::Keep, false)
            );
        }
        // Over a pin of this service too: the chain's side is the one that counts.
        let pin = key.sign("web-1", "v2", NOW + TTL);
        assert_eq!(cohort(Side::Stable, &t, facts(b"u", Some(pin.as_bytes()))).side, Side::Stable);
        let tripped = RequestFacts { canary_healthy: false, ..facts(b"u", None) };
        assert_eq!(cohort(Side::Canary, &t, tripped).side, Side::Stable, "a tripped canary gets nothing");
        assert_eq!(cohort(Side::Canary, &table(0.0), facts(b"u", None)).side, Side::Stable);
        let mut draining = RoutingTable::stable_only("web-2", "v2");
        draining.draining = Some(Draining { version: "v1".into(), until: NOW + 10 });
        assert_eq!(cohort(Side::Draining, &draining, facts(b"u", None)).side, Side::Draining);
        let later = RequestFacts { now: NOW + 10, ..facts(b"u", None) };
        assert_eq!(cohort(Side::Draining, &draining, later).side, Side::Stable);
        let grace = rolled_back(60);
        assert_eq!(cohort(Side::Retired, &grace, facts(b"u", None)).side, Side::Retired);
        assert_eq!(cohort(Side::Canary, &grace, facts(b"u", None)).side, Side::Retired);
        let write = RequestFacts { read_only: false, ..facts(b"u", None) };
        assert_eq!(cohort(Side::Retired, &grace, write).side, Side::Stable, "writes go to stable");
    }

    fn rolled_back(grace_secs: u64) -> RoutingTable {
        let until_ms = (NOW + grace_secs) * 1000;
        RoutingTable {
            retired: Some(Retired { version: "v2".into(), until_ms }),
            ..RoutingTable::stable_only("web-1", "v1")
        }
    }

    #[test]
    fn a_rolled_back_canary_serves_its_open_pages_until_the_grace_ends() {
        let key = PinKey::new(b"k", "web");
        let t = rolled_back(60);
        let pin = key.sign("web-1", "v2", NOW + TTL);
        let d = decide(&t, &key, TTL, &facts(b"u", Some(pin.as_bytes())));
        assert_eq!((d.side, d.reason, d.pin, d.version_gone), (Side::Retired, Reason::Pinned, PinAction::Keep, true));
        assert_eq!(t.version(d.side), Some("v2"));
        // A write of the open page goes to stable, and leaves the page its pin for its next chunk.
        let post = RequestFacts { read_only: false, ..facts(b"u", Some(pin.as_bytes())) };
        let d = decide(&t, &key, TTL, &post);
        assert_eq!((d.side, d.pin, d.version_gone), (Side::Stable, PinAction::Keep, true));
        // A page load moves the session to stable at once, and still says the version is gone.
        let nav = RequestFacts { boundary: true, ..facts(b"u", Some(pin.as_bytes())) };
        let d = decide(&t, &key, TTL, &nav);
        assert_eq!((d.side, d.pin, d.version_gone), (Side::Stable, PinAction::Issue, true));
        // After the window, nothing goes to it.
        let later = RequestFacts { now: NOW + 60, ..facts(b"u", Some(pin.as_bytes())) };
        let d = decide(&t, &key, TTL, &later);
        assert_eq!((d.side, d.pin, d.version_gone), (Side::Stable, PinAction::Issue, true));
    }

    #[test]
    fn a_tripped_or_graceless_rollback_sends_everything_to_stable() {
        let key = PinKey::new(b"k", "web");
        let pin = key.sign("web-1", "v2", NOW + TTL);
        let tripped = RequestFacts { canary_healthy: false, ..facts(b"u", Some(pin.as_bytes())) };
        assert_eq!(decide(&rolled_back(60), &key, TTL, &tripped).side, Side::Stable);
        let d = decide(&rolled_back(0), &key, TTL, &facts(b"u", Some(pin.as_bytes())));
        assert_eq!(d.side, Side::Stable);

        // Sessions pinned to stable, and new ones, never hear of it.
        let stable_pin = key.sign("web-1", "v1", NOW + TTL);
        let d = decide(&rolled_back(60), &key, TTL, &facts(b"u", Some(stable_pin.as_bytes())));
        assert_eq!((d.side, d.version_gone), (Side::Stable, false));
        assert!(!decide(&rolled_back(60), &key, TTL, &facts(b"u", None)).version_gone);
    }

    #[test]
    fn a_retired_name_that_is_routed_again_is_not_gone() {
        let key = PinKey::new(b"k", "web");
        let t =
            RoutingTable { canary: Some("v2".into()), weight: Weight::from_percent(10.0).unwrap(), ..rolled_back(60) };
        let pin = key.sign("web-1", "v2", NOW + TTL);
        let d = decide(&t, &key, TTL, &facts(b"u", Some(pin.as_bytes())));
        assert_eq!((d.side, d.version_gone), (Side::Canary, false));
    }

    #[test]
    fn force_chooses_but_never_pins() {
        let key = PinKey::new(b"k", "web");
        let f = RequestFacts { force: Some(Force::Canary), ..facts(b"u", None) };
        let d = decide(&table(0.0), &key, TTL, &f);
        assert_eq!((d.side, d.reason, d.pin), (Side::Canary, Reason::Forced, PinAction::Keep));
        let no_canary = RoutingTable::stable_only("web-1", "v1");
        assert_eq!(decide(&no_canary, &key, TTL, &f).side, Side::Stable);
    }

    #[test]
    fn a_pin_of_another_service_falls_back_to_the_bucket() {
        let secret = crate::pin::PinSecret::new(b"shared");
        let (web, api) = (secret.for_service("web"), secret.for_service("api"));
        let t = table(0.01);
        let canary_pin = web.sign("web-1", "v2", NOW + TTL);
        let d = decide(&t, &api, TTL, &facts(b"user-1", Some(canary_pin.as_bytes())));
        assert_eq!((d.side, d.reason, d.pin), (Side::Stable, Reason::Bucket, PinAction::Issue));
        let d = decide(&t, &web, TTL, &facts(b"user-1", Some(canary_pin.as_bytes())));
        assert_eq!((d.side, d.reason), (Side::Canary, Reason::Pinned));
    }

    #[test]
    fn a_fresh_matching_pin_is_not_reissued() {
        let key = PinKey::new(b"k", "web");
        let t = table(50.0);
        let d = decide(&t, &key, TTL, &facts(b"user-1", None));
        let version = t.version(d.side).unwrap();
        let pin = key.sign("web-1", version, NOW + TTL);
        let again = decide(&t, &key, TTL, &facts(b"user-1", Some(pin.as_bytes())));
        assert_eq!((again.side, again.pin), (d.side, PinAction::Keep));
    }
}
