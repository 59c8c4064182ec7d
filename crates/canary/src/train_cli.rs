//! `canary rollout start SERVICE … --with OTHER=VERSION@ADDR`: a release train, one rollout over
//! several services with one plan, one salt and one verdict.

use anyhow::{Context, anyhow};
use canary_core::api::{StartRollout, StartTrain, TrainMember, TrainView};
use canary_core::config::{Upstreams, VersionName};

use crate::admin_client::{Admin, Answer};
use crate::output::outln;
use crate::rollout_view::plan_line;

/// The train of `service`'s rollout `first` and the members `with` names, each
/// `SERVICE=VERSION@ADDR[,ADDR…]`.
pub fn train_request(service: &str, first: StartRollout, with: &[String]) -> anyhow::Result<StartTrain> {
    let mut members =
        vec![TrainMember { service: service.to_owned(), version: first.version, upstreams: first.upstreams }];
    for text in with {
        members.push(member(text).with_context(|| format!("--with {text:?}"))?);
    }
    canary_core::train::check_members(&members.iter().map(|m| m.service.clone()).collect::<Vec<_>>())
        .map_err(|e| anyhow!("{e}"))?;
    Ok(StartTrain {
        members,
        steps: first.steps,
        drain: first.drain,
        max_step_wait: first.max_step_wait,
        analysis: first.analysis,
    })
}

/// One `SERVICE=VERSION@ADDR[,ADDR…]`.
fn member(text: &str) -> anyhow::Result<TrainMember> {
    let (service, rest) = text.split_once('=').ok_or_else(|| anyhow!("expected SERVICE=VERSION@ADDR[,ADDR…]"))?;
    let (version, addrs) = rest.split_once('@').ok_or_else(|| anyhow!("expected VERSION@ADDR after the '='"))?;
    canary_core::names::check_id(service, "service").map_err(|e| anyhow!("{e}"))?;
    let version = VersionName::try_from(version.to_owned()).map_err(|e| anyhow!("{e}"))?;
    let addrs: Vec<String> = addrs.split(',').map(str::to_owned).collect();
    let upstreams = Upstreams::try_from(addrs).map_err(|e| anyhow!("{e}"))?;
    Ok(TrainMember { service: service.to_owned(), version, upstreams })
}

/// Starts the train and prints it.
pub async fn start_train(admin: &Admin, request: StartTrain, json: bool) -> anyhow::Result<()> {
    let body = serde_json::to_value(&request)?;
    let answer: Answer<TrainView> = admin.call(reqwest::Method::POST, "/api/v1/trains", Some(body)).await?;
    if json {
        return outln!("{}", answer.sent);
    }
    outln!("{}", answer.client_message)?;
    for member in &answer.data.members {
        outln!("  {}: {}", member.rollout.service, plan_line(&member.rollout))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first() -> StartRollout {
        serde_json::from_value(
            serde_json::json!({"version": "v2", "upstreams": ["127.0.0.1:9002"], "steps": "10%/1m,100%"}),
        )
        .unwrap()
    }

    #[test]
    fn with_adds_members_that_share_the_first_ones_plan() {
        let with = ["api=7.1.0@127.0.0.1:9102,127.0.0.1:9103".to_owned()];
        let train = train_request("web", first(), &with).unwrap();
        let body = serde_json::to_value(&train).unwrap();
        assert_eq!(body["members"][1]["service"], "api");
        assert_eq!(body["members"][1]["version"], "7.1.0");
        assert_eq!(body["members"][1]["upstreams"], serde_json::json!(["127.0.0.1:9102", "127.0.0.1:9103"]));
        assert_eq!(body["steps"], "10%/1m,100%");
        let _: StartTrain = serde_json::from_value(body).unwrap();
    }

    #[test]
    fn a_bad_member_is_refused_before_anything_is_sent() {
        for (text, why) in [
            ("api", "SERVICE=VERSION@ADDR"),
            ("api=v7", "VERSION@ADDR"),
            ("api=v7@", "address"),
            ("a pi=v7@127.0.0.1:1", "service"),
            ("web=v3@127.0.0.1:1", "named twice"),
        ] {
            let err = train_request("web", first(), &[text.to_owned()]).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{text}: {err:#}");
        }
    }
}
