//! A service as the API and the dashboard show it: its stored routing, where its gateway
//! listens, and whether a gateway's breaker keeps traffic off its canary.

use canary_core::RouteSpec;
use canary_core::api::{ServiceView, VersionView};
use canary_core::config::VersionConfig;

use crate::Controller;
use crate::error::ControllerError;
use crate::routing::ServiceEntry;

/// The view of `entry` with routing `spec` and the breaker's trip reason, if tripped.
pub fn service_view(entry: &ServiceEntry, spec: &RouteSpec, tripped: Option<String>) -> ServiceView {
    let version = |v: &VersionConfig| VersionView {
        version: v.version.as_str().to_owned(),
        upstreams: v.upstreams.as_slice().to_vec(),
    };
    ServiceView {
        name: entry.name.clone(),
        listen: entry.listen.clone(),
        rollout_id: spec.rollout_id.clone(),
        stable: version(&spec.stable),
        canary: spec.canary.as_ref().map(version),
        weight: spec.weight.percent(),
        canary_tripped: tripped.is_some(),
        trip_reason: tripped,
        draining: spec.draining.as_ref().map(|d| d.version.version.as_str().to_owned()),
        retired: spec.retired_at(canary_core::clock::unix_ms()).map(str::to_owned),
        generation: spec.generation,
    }
}

impl Controller {
    /// One service as the API shows it, read from the store.
    pub async fn service_view(&self, name: &str) -> Result<ServiceView, ControllerError> {
        let entry = self.routing().service(name)?;
        let (spec, _) = self.routing().current(name).await?;
        Ok(service_view(entry, &spec, self.tripped(name).await))
    }

    /// Every service, in configuration order.
    pub async fn service_views(&self) -> Result<Vec<ServiceView>, ControllerError> {
        let mut views = Vec::new();
        for entry in self.routing().services() {
            views.push(self.service_view(&entry.name).await?);
        }
        Ok(views)
    }

    /// Why a gateway's breaker keeps traffic off `service`'s canary; `None` while it does not
    /// (or while the breakers cannot be read: a view must not fail on it).
    pub async fn tripped(&self, service: &str) -> Option<String> {
        match self.breakers().tripped(service).await {
            Ok(tripped) => tripped,
            Err(e) => {
                tracing::debug!(service, error = %e, "breaker state unavailable");
                None
            }
        }
    }
}
