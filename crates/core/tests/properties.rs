//! Properties of what an attacker or a careless operator controls: pins from cookies, config
//! files, plans, and any order of rollout commands. Random inputs, bounded: `PROPTEST_CASES`
//! raises the count per property (CI runs proptest's default of 256).

use canary_core::bucket::{BUCKETS, bucket};
use canary_core::cohort::{RANGES, range_of};
use canary_core::config::Config;
use canary_core::pin::{PinKey, PinSecret};
use canary_core::rollout::{Command, Phase, Rollout, RouteChange, parse_steps};
use proptest::prelude::*;

/// proptest's defaults (`PROPTEST_CASES` still counts), without failure files in the tree: a
/// failing case is printed, shrunk, in the test's output.
fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

const SECRET: &[u8] = b"property-test-pin-secret";
const NOW: u64 = 1_800_000_000;

fn rollout_id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,24}"
}

fn version() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_signed_pin_verifies_as_what_was_signed(id in rollout_id(), v in version(), ttl in 1u64..10_000_000) {
        let key = PinKey::new(SECRET, "web");
        let value = key.sign(&id, &v, NOW + ttl);
        let pin = key.verify(value.as_bytes(), NOW).expect("a fresh pin verifies");
        prop_assert_eq!(pin.rollout_id, id.as_bytes());
        prop_assert_eq!(pin.version, v.as_bytes());
        prop_assert_eq!(pin.expires, NOW + ttl);
        prop_assert!(key.verify(value.as_bytes(), NOW + ttl).is_none(), "void at its expiry");
        prop_assert!(PinKey::new(SECRET, "api").verify(value.as_bytes(), NOW).is_none(), "bound to its service");
        prop_assert!(PinSecret::new(b"another-secret-entirely").for_service("web").verify(value.as_bytes(), NOW).is_none());
    }

    #[test]
    fn any_change_to_a_pin_voids_it(id in rollout_id(), v in version(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let key = PinKey::new(SECRET, "web");
        let value = key.sign(&id, &v, NOW + 3600).into_bytes();
        let mut forged = value.clone();
        let i = at.index(forged.len());
        prop_assume!(forged[i] != byte);
        forged[i] = byte;
        prop_assert!(key.verify(&forged, NOW).is_none(), "{:?} verified", String::from_utf8_lossy(&forged));
    }

    #[test]
    fn arbitrary_cookie_bytes_never_verify(value in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(PinKey::new(SECRET, "web").verify(&value, NOW).is_none());
    }

    #[test]
    fn pin_shaped_text_never_verifies(text in "[a-z0-9-]{1,12}\\.[a-z0-9.]{1,12}\\.[0-9]{1,20}\\.[A-Za-z0-9_-]{22}") {
        prop_assert!(PinKey::new(SECRET, "web").verify(text.as_bytes(), NOW).is_none());
    }

    #[test]
    fn every_key_falls_in_a_bucket_and_a_range(salt in prop::collection::vec(any::<u8>(), 0..64), key in prop::collection::vec(any::<u8>(), 0..400)) {
        let b = bucket(&salt, &key);
        prop_assert!(b < BUCKETS);
        prop_assert!(range_of(b) < RANGES);
        prop_assert_eq!(b, bucket(&salt, &key), "the rule is a function of its inputs");
    }
}

/// A config that `canary validate` accepts, for mutations to start from.
const CONFIG: &str = r#"[admin]
listen = "127.0.0.1:7070"
token = "admin-token-of-sixteen-plus"

[gateway]
workers = 2
pin_secret = "sixteen-characters-at-least"

[controller]
tick = "200ms"

[[service]]
name = "web"
listen = "127.0.0.1:8080"
user_key = ["header:x-user-id", "cookie:uid"]
trusted_cidrs = ["10.0.0.0/8"]
force_token = "force-token-of-sixteen-plus"
pin_ttl = "30m"
stable = { version = "v1", upstreams = ["127.0.0.1:9001"] }
canary = { version = "v2", upstreams = ["127.0.0.1:9002"] }
weight = 12.5
"#;

/// One edit of a config file, as a careless hand (or a hostile template) would make it.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    ReplaceByte(prop::sample::Index, char),
    InsertText(prop::sample::Index, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::DeleteLine),
        any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
        (any::<prop::sample::Index>(), any::<char>()).prop_map(|(i, c)| Edit::ReplaceByte(i, c)),
        (any::<prop::sample::Index>(), "[\\[\\]=\"{}a-z0-9.:%, \n-]{1,12}").prop_map(|(i, t)| Edit::InsertText(i, t)),
    ]
}

fn apply_edit(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i.index(lines.len()));
            lines.join("\n")
        }
        Edit::DuplicateLine(i) => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at]);
            lines.join("\n")
        }
        Edit::ReplaceByte(i, c) => {
            let mut chars: Vec<char> = text.chars().collect();
            let at = i.index(chars.len());
            chars[at] = *c;
            chars.into_iter().collect()
        }
        Edit::InsertText(i, t) => {
            let boundaries: Vec<usize> = (0..=text.len()).filter(|&b| text.is_char_boundary(b)).collect();
            let at = boundaries[i.index(boundaries.len())];
            format!("{}{t}{}", &text[..at], &text[at..])
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_mangled_config_is_accepted_or_refused_with_words(edits in prop::collection::vec(edit(), 1..4)) {
        let text = edits.iter().fold(CONFIG.to_owned(), |text, e| apply_edit(&text, e));
        if let Err(e) = Config::from_toml(&text) {
            prop_assert!(e.to_string().len() > 10, "an error a person can act on: {e}");
        }
    }

    #[test]
    fn arbitrary_text_is_no_config(text in "\\PC{0,200}") {
        if let Err(e) = Config::from_toml(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn a_plan_that_parses_is_a_valid_plan(text in "[0-9.%/smhapprove, ]{0,40}") {
        if let Ok(steps) = parse_steps(&text) {
            prop_assert!(!steps.is_empty());
            prop_assert!(canary_core::rollout::check_steps(&steps).is_ok(), "{text:?} parsed into an invalid plan");
        }
    }
}

/// A pending rollout of `web` from v1 to v2 with the plan `plan`, as the store would hold it.
fn pending(plan: &str) -> Rollout {
    let steps = serde_json::to_value(parse_steps(plan).expect("a valid plan")).unwrap();
    serde_json::from_value(serde_json::json!({
        "id": "web-1", "service": "web",
        "stable": {"version": "v1", "upstreams": ["127.0.0.1:1"]},
        "canary": {"version": "v2", "upstreams": ["127.0.0.1:2"]},
        "steps": steps, "drain": "1m", "maxStepWait": "10m",
        "phase": "pending", "step": 0, "stepStartedMs": 0, "stepBankedMs": 0,
        "createdMs": 0, "updatedMs": 0, "transitions": 0, "reason": null
    }))
    .expect("the stored form of a rollout")
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Begin),
        Just(Command::Advance),
        Just(Command::Advance),
        Just(Command::Pause("held".into())),
        Just(Command::Resume),
        Just(Command::Promote("by hand".into())),
        Just(Command::Abort("by hand".into())),
        Just(Command::Fail("worse".into())),
    ]
}

fn plan() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["100%", "10%/1s,100%", "1%/30s,25%/2m,50%/5m,100%", "5%/0s,6%/1s,100%"])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_command_sequence_keeps_a_rollout_consistent(plan in plan(), commands in prop::collection::vec((command(), 0u64..120_000), 0..40)) {
        let mut rollout = pending(plan);
        let mut now = 1_000u64;
        for (command, pause) in commands {
            now += pause;
            let before = rollout.clone();
            match before.apply(&command, now) {
                Err(refused) => {
                    prop_assert_eq!(refused.phase, before.phase.name());
                }
                Ok(t) => {
                    prop_assert!(!before.phase.is_terminal(), "{:?} changed a {:?} rollout", command, before.phase);
                    prop_assert!(t.rollout.check().is_ok(), "{:?}", t.rollout.check());
                    prop_assert_eq!(t.rollout.transitions, before.transitions + 1);
                    prop_assert_eq!(t.event.seq, before.transitions);
                    prop_assert_eq!((t.event.from, t.event.to), (before.phase, t.rollout.phase));
                    prop_assert_eq!(t.event.weight, t.rollout.weight().percent());
                    prop_assert!(t.rollout.held_ms(now) <= now.saturating_sub(before.created_ms) + before.step_banked_ms);
                    match t.rollout.phase {
                        Phase::Failed | Phase::Aborted => prop_assert_eq!(&t.route, &RouteChange::RemoveCanary),
                        Phase::Promoted => prop_assert_eq!(&t.route, &RouteChange::Promote),
                        _ => prop_assert!(t.rollout.step >= before.step || before.phase == Phase::Pending),
                    }
                    rollout = t.rollout;
                }
            }
        }
    }
}
