//! Release trains: one rollout over several services, and the cohort token that keeps a user's
//! whole call chain on one side of it.
//!
//! A train's members are ordinary rollouts, one per service, started in one transaction with one
//! plan and one salt: the bucket rule then puts every user key on the same side of every member
//! at every weight. They move together — a step advances only when every member's judge finds it
//! safe, and any member's rollback, pause or person's action applies to all.
//!
//! The bucket rule only helps where the user key reaches the gateway. A call from one service to
//! another carries the user's cohort instead: each gateway of a train member sends its app the
//! signed token `x-canary-cohort: <train>.<side>.<expires>.<mac>` (the pin format, signed with the
//! pin secret under a key of its own), the app passes it on in its calls as it passes trace
//! headers, and a gateway of another member of the same train sends the call to the same side.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::pin::PinKey;
use crate::rollout::Command;
use crate::routing::Side;

/// The header carrying the cohort token between a train's services.
pub const COHORT_HEADER: &str = "x-canary-cohort";

/// How long a cohort token is good for: a call chain ends within seconds; the margin covers the
/// clocks of gateways on other hosts.
pub const COHORT_TTL_SECS: u64 = 300;

/// Services a train may hold.
pub const MAX_MEMBERS: usize = 16;

/// The train a rollout belongs to, written into every member's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainRef {
    /// The train's id; cohort tokens name it.
    pub id: String,
    /// The bucket salt of every member while the train runs.
    pub salt: String,
    /// Every member service, in the order the train was started with.
    pub services: Vec<String>,
}

/// A side's word in a cohort token.
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Stable => "stable",
        Side::Canary => "canary",
        Side::Draining => "draining",
        Side::Retired => "retired",
    }
}

fn side_from(word: &[u8]) -> Option<Side> {
    [Side::Stable, Side::Canary, Side::Draining, Side::Retired].into_iter().find(|&s| side_name(s).as_bytes() == word)
}

/// The cohort token saying a request of train `train` went to `side`, valid until `expires`.
pub fn sign_cohort(key: &PinKey, train: &str, side: Side, expires: u64) -> String {
    key.sign(train, side_name(side), expires)
}

/// The side a cohort token names, if it is correctly signed, unexpired at `now` and of `train`.
pub fn verify_cohort(key: &PinKey, train: &str, token: &[u8], now: u64) -> Option<Side> {
    let pin = key.verify(token, now)?;
    if pin.rollout_id != train.as_bytes() {
        return None;
    }
    side_from(pin.version)
}

/// Checks a train's member list: two or more distinct services, at most [`MAX_MEMBERS`].
pub fn check_members(services: &[String]) -> Result<(), String> {
    if services.len() < 2 {
        return Err("a train needs at least two services; a rollout of one service is a plain rollout".into());
    }
    if services.len() > MAX_MEMBERS {
        return Err(format!("a train holds at most {MAX_MEMBERS} services"));
    }
    for (i, service) in services.iter().enumerate() {
        if services[..i].contains(service) {
            return Err(format!("service {service:?} is named twice in the train"));
        }
    }
    Ok(())
}

/// The salt of a train: the members' fixed salt when the ones that fix one agree (the cohort
/// they chose stays), `drawn` when none fixes one.
pub fn train_salt(fixed: &[(&str, Option<&str>)], drawn: String) -> Result<String, String> {
    let mut chosen: Option<(&str, &str)> = None;
    for &(service, salt) in fixed {
        let Some(salt) = salt else { continue };
        match chosen {
            Some((first, other)) if other != salt => {
                return Err(format!(
                    "services {first:?} and {service:?} fix different salts; a train needs one salt for all"
                ));
            }
            _ => chosen = Some((service, salt)),
        }
    }
    Ok(chosen.map_or(drawn, |(_, salt)| salt.to_owned()))
}

/// One member as the train's advance needs to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The member's current step.
    pub step: usize,
    /// The member's state: its record's transition count, which every transition moves on.
    pub state: u64,
    /// The state at which the member's judge (and gates) last said "move on", if its last look
    /// said so.
    pub ready_at: Option<u64>,
}

/// Whether the train may move on: every member stands at the same step, and its last look,
/// taken in the state it stands in now, said so. A look taken before the last transition says
/// nothing about the new state.
pub fn advance_together(members: &[Readiness]) -> bool {
    let Some(first) = members.first() else { return false };
    members.iter().all(|m| m.step == first.step && m.ready_at == Some(m.state))
}

/// `command`, decided for service `origin`, as it applies to member `member`: the same command,
/// its reason saying which service it came from.
pub fn member_command(command: &Command, origin: &str, member: &str) -> Command {
    if origin == member {
        return command.clone();
    }
    let from = |why: &String| format!("train member {origin}: {why}");
    match command {
        Command::Pause(why) => Command::Pause(from(why)),
        Command::Promote(why) => Command::Promote(from(why)),
        Command::Abort(why) => Command::Abort(from(why)),
        Command::Fail(why) => Command::Fail(from(why)),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::PinSecret;

    #[test]
    fn a_cohort_token_names_its_train_and_side_and_nothing_else_verifies() {
        let secret = PinSecret::new(b"fleet secret");
        let cohorts = secret.for_trains();
        let token = sign_cohort(&cohorts, "rel-7", Side::Canary, 1_000);
        assert_eq!(verify_cohort(&cohorts, "rel-7", token.as_bytes(), 999), Some(Side::Canary));
        assert_eq!(verify_cohort(&cohorts, "rel-8", token.as_bytes(), 999), None, "another train");
        assert_eq!(verify_cohort(&cohorts, "rel-7", token.as_bytes(), 1_000), None, "expired");
        let other_fleet = PinSecret::new(b"another secret").for_trains();
        assert_eq!(verify_cohort(&other_fleet, "rel-7", token.as_bytes(), 0), None);
        // A service's pin is not a cohort token, even with the same words in it.
        let pin = secret.for_service("web").sign("rel-7", "canary", 1_000);
        assert_eq!(verify_cohort(&cohorts, "rel-7", pin.as_bytes(), 0), None);
        let tampered = token.replacen("canary", "stable", 1);
        assert_eq!(verify_cohort(&cohorts, "rel-7", tampered.as_bytes(), 0), None);
        for side in [Side::Stable, Side::Draining, Side::Retired] {
            let token = sign_cohort(&cohorts, "rel-7", side, 1_000);
            assert_eq!(verify_cohort(&cohorts, "rel-7", token.as_bytes(), 0), Some(side));
        }
    }

    #[test]
    fn members_are_two_or_more_distinct_services() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_members(&names(&["web", "api"])).is_ok());
        assert!(check_members(&names(&["web"])).unwrap_err().contains("at least two"));
        assert!(check_members(&names(&["web", "api", "web"])).unwrap_err().contains("\"web\" is named twice"));
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("s{i}")).collect();
        assert!(check_members(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_fixed_salt_carries_over_to_the_train_only_when_the_members_agree() {
        let drawn = || "train-salt".to_owned();
        assert_eq!(train_salt(&[("web", None), ("api", None)], drawn()).unwrap(), "train-salt");
        assert_eq!(train_salt(&[("web", Some("early")), ("api", None)], drawn()).unwrap(), "early");
        assert_eq!(train_salt(&[("web", Some("early")), ("api", Some("early"))], drawn()).unwrap(), "early");
        let err = train_salt(&[("web", Some("early")), ("api", Some("late"))], drawn()).unwrap_err();
        assert!(err.contains("\"web\" and \"api\" fix different salts"), "{err}");
    }

    #[test]
    fn the_train_advances_only_when_every_member_is_ready_at_the_same_step() {
        let ready = |step, state| Readiness { step, state, ready_at: Some(state) };
        assert!(advance_together(&[ready(1, 4), ready(1, 5)]), "a gate's event moves one member's count alone");
        assert!(!advance_together(&[ready(1, 4), Readiness { step: 1, state: 4, ready_at: None }]));
        let stale = Readiness { step: 1, state: 4, ready_at: Some(3) };
        assert!(!advance_together(&[ready(1, 4), stale]), "a look taken before the last transition");
        assert!(!advance_together(&[ready(1, 4), ready(2, 5)]), "members at different steps");
        assert!(!advance_together(&[]));
    }

    #[test]
    fn a_members_command_says_which_service_it_came_from() {
        let fail = Command::Fail("error rate 3.1× stable's".into());
        assert_eq!(member_command(&fail, "api", "api"), fail);
        assert_eq!(
            member_command(&fail, "api", "web"),
            Command::Fail("train member api: error rate 3.1× stable's".into())
        );
        assert_eq!(member_command(&Command::Advance, "api", "web"), Command::Advance);
        assert_eq!(member_command(&Command::Resume, "api", "web"), Command::Resume);
    }
}
