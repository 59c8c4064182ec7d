//! The web dashboard on the admin listener: the page at `/`, its static files under
//! `/dashboard/`, and the live feed at `/api/v1/stream`.
//!
//! The page is hand-written HTML, CSS and ES modules embedded in the binary (no build step).
//! Its live data comes over one WebSocket per browser: a SharedWorker owns the socket and
//! every tab of the origin talks to the worker (a dedicated Worker per tab where SharedWorker
//! does not exist). Actions go through the ordinary REST API. `docs/dashboard.md` has the
//! architecture and the message format.

pub mod assets;
pub mod sampler;
pub mod stream;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use sampler::Sampler;

/// Open feed sockets in this process; every router's feed counts into it.
static CONNECTIONS: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// The `canary_admin_websocket_connections` gauge.
pub fn connections() -> &'static Gauge {
    &CONNECTIONS
}

/// Adds the dashboard's metrics to the registry `/metrics` exposes.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "canary_admin_websocket_connections",
        "Open dashboard live-feed WebSockets on the admin listener",
        CONNECTIONS.clone(),
    );
}

/// What the dashboard's handlers reach.
#[derive(Clone)]
pub struct Dashboard {
    /// The admin API's state.
    pub app: AppState,
    /// The metric ticks.
    pub sampler: Arc<Sampler>,
    /// One permit per live-feed socket that may be open ([`canary_core::admin::Access`]'s
    /// `max_feed_connections`).
    pub feeds: Arc<Semaphore>,
}

/// The dashboard's routes, to merge into the admin router.
///
/// The sampler starts here when a tokio runtime is running (as in `canary serve`), so the
/// charts have history before the first page opens; it stops when the router is dropped.
pub fn routes(app: &AppState) -> Router<AppState> {
    let sampler = Sampler::new();
    if tokio::runtime::Handle::try_current().is_ok() {
        sampler.spawn(app.controller.clone());
    }
    let feeds = Arc::new(Semaphore::new(app.access.max_feed_connections));
    let dashboard = Dashboard { app: app.clone(), sampler, feeds };
    let (feed, _document) = feed_routes().split_for_parts();
    Router::new()
        .route("/", get(assets::index))
        .route("/dashboard/{file}", get(assets::file))
        .merge(feed)
        .method_not_allowed_fallback(crate::api::method_not_allowed)
        .with_state(dashboard)
}

/// The live feed's route with its documentation, for the router and the API's document.
pub fn feed_routes() -> OpenApiRouter<Dashboard> {
    OpenApiRouter::new().routes(routes!(stream::handler))
}
