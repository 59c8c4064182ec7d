//! The desired routing of a service, as stored, sent over the API and followed by gateways.
//!
//! A [`RouteSpec`] is plain data: the versions with their addresses, the weight, the rollout id
//! that names pins and seeds the bucket salt, the previous stable while it drains, and a
//! rolled-back canary while the pages it served still load their assets from it. Every change
//! bumps `generation`, so a gateway can tell a newer spec from an older one.

use serde::{Deserialize, Serialize};

use crate::config::{ServiceConfig, VersionConfig};
use crate::routing::{Draining, Retired, RoutingTable};
use crate::weight::Weight;

/// The previous stable version after a promotion, serving its pinned sessions until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainingSpec {
    /// The version and its addresses.
    pub version: VersionConfig,
    /// Unix time (seconds) at which its sessions move on.
    pub until: u64,
}

/// A canary just rolled back or aborted: the sessions pinned to it move to stable at their next
/// page load, but until `until_ms` the requests of pages it already served (scripts, chunks,
/// data) still go to it, so an open page does not break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredSpec {
    /// The version and its addresses.
    pub version: VersionConfig,
    /// Unix time (milliseconds) at which its grace window ends.
    pub until_ms: u64,
}

/// The desired routing of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Names the cohort: pins carry it and, unless `salt` is set, it salts the bucket hash.
    pub rollout_id: String,
    /// The salt of the bucket hash: fixed by the service's config to keep one cohort across
    /// rollouts, or drawn by the controller when a rollout ends, so the gateways count the next
    /// rollout's cohort before it starts.
    #[serde(default)]
    pub salt: Option<String>,
    /// The stable version.
    pub stable: VersionConfig,
    /// The canary, if any.
    #[serde(default)]
    pub canary: Option<VersionConfig>,
    /// Share of users on the canary.
    #[serde(default)]
    pub weight: Weight,
    /// The previous stable while it drains.
    #[serde(default)]
    pub draining: Option<DrainingSpec>,
    /// The canary last rolled back, while its open pages finish loading. Left out when absent,
    /// so a gateway that predates it still reads every spec without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<RetiredSpec>,
    /// Bumped by every change.
    #[serde(default)]
    pub generation: u64,
    /// Latency bucket index (of `crate::latency`) above which a request counts as slow for the
    /// judge's tail test; fixed for a rollout from stable's own p99.
    #[serde(default)]
    pub slow_bucket: Option<u8>,
    /// A token the controller draws for each rollout: sent as `x-canary-force-token`, it makes
    /// `x-canary-force` trusted while this rollout is in force, so a release gate's test suite
    /// reaches the canary with no configured token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_token: Option<String>,
    /// The release train of the rollout in force, if it is one: the gateways honour the cohort
    /// tokens of this train and send their own upstream. Left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<String>,
}

/// Why a route spec cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A weight above zero with no canary to send it to.
    #[error("weight {0} needs a canary; set one first")]
    WeightWithoutCanary(Weight),
    /// The canary has the stable version's name.
    #[error("canary version {0:?} is the stable version")]
    CanaryIsStable(String),
    /// The rollout id is not a valid id.
    #[error("{0}")]
    BadId(String),
}

/// Why a routing change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The resulting spec breaks a rule.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The change needs a canary and there is none.
    #[error("service {0:?} has no canary")]
    NoCanary(String),
}

impl RouteSpec {
    /// The spec a service starts with, from its configuration.
    pub fn from_config(service: &ServiceConfig) -> RouteSpec {
        let rollout_id = default_rollout_id(
            service.name.as_str(),
            service.canary.as_ref().unwrap_or(&service.stable).version.as_str(),
        );
        RouteSpec {
            rollout_id,
            salt: service.salt.clone(),
            stable: service.stable.clone(),
            canary: service.canary.clone(),
            weight: service.weight,
            draining: None,
            retired: None,
            generation: 1,
            slow_bucket: None,
            force_token: None,
            train: None,
        }
    }

    /// Checks the rules that span fields.
    pub fn check(&self) -> Result<(), SpecError> {
        crate::names::check_id(&self.rollout_id, "rollout id").map_err(SpecError::BadId)?;
        match &self.canary {
            None if self.weight != Weight::ZERO => Err(SpecError::WeightWithoutCanary(self.weight)),
            Some(c) if c.version == self.stable.version => Err(SpecError::CanaryIsStable(c.version.as_str().into())),
            _ => Ok(()),
        }
    }

    /// The rolled-back canary's name while its grace window is open at `now_ms`.
    pub fn retired_at(&self, now_ms: u64) -> Option<&str> {
        self.retired.as_ref().filter(|r| now_ms < r.until_ms).map(|r| r.version.version.as_str())
    }

    /// The salt buckets are computed under: the spec's own, else the rollout id.
    pub fn salt_in_force(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.rollout_id)
    }

    /// The routing table the gateway decides with.
    pub fn table(&self) -> RoutingTable {
        RoutingTable {
            rollout_id: self.rollout_id.clone(),
            salt: self.salt_in_force().to_owned(),
            stable: self.stable.version.as_str().to_owned(),
            canary: self.canary.as_ref().map(|c| c.version.as_str().to_owned()),
            weight: self.weight,
            draining: self
                .draining
                .as_ref()
                .map(|d| Draining { version: d.version.version.as_str().to_owned(), until: d.until }),
            retired: self
                .retired
                .as_ref()
                .map(|r| Retired { version: r.version.version.as_str().to_owned(), until_ms: r.until_ms }),
            train: self.train.clone(),
        }
    }
}

/// The rollout id of a canary set by hand (config or API): stable for a given version, so
/// every gateway and every restart computes the same cohort.
pub fn default_rollout_id(service: &str, version: &str) -> String {
    let mut id = format!("{service}-{}", version.replace('.', "_"));
    id.truncate(crate::names::MAX_NAME);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_versions_make_valid_rollout_ids() {
        let id = default_rollout_id("web", "1.4.2");
        assert_eq!(id, "web-1_4_2");
        assert!(crate::names::check_id(&id, "rollout id").is_ok());
    }
}
