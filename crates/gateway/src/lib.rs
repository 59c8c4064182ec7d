//! Sticky Canary's data plane: a reverse proxy that pins every user to one version of a
//! service and splits traffic between the stable version and a canary by weight.
//!
//! A [`Gateway`] holds the services of a configuration. [`Gateway::start`] binds their
//! listeners and runs the worker threads; routing changes go through each [`Service`] and take
//! effect on the next request, atomically.

pub mod accept;
pub mod body;
pub mod breaker;
pub mod conn_clock;
pub mod conn_table;
pub mod connection;
#[doc(hidden)]
pub mod fixtures;
pub mod h1;
pub mod header_maps;
pub mod headers;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod replayed;
pub mod request;
pub mod request_deadlines;
pub mod service;
pub mod sketch;
pub mod sniff;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod watched;
pub mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use canary_core::config::Config;
use canary_core::pin::{PinKey, PinSecret};
use tokio::sync::watch;

// Routing errors live in core; the admin API still names them through the gateway.
pub use canary_core::RouteError;
pub use metrics::MetricsRegistry;
pub use service::{Service, Shared};

use worker::{WorkerListener, bind_reuseport, run_worker};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener could not be bound.
    #[error("service {service:?}: cannot listen on {addr}: {source}")]
    Bind {
        /// The service.
        service: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("service {service:?}: {message}")]
    Tls {
        /// The service.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
}

/// The services of one gateway process.
pub struct Gateway {
    services: Vec<Arc<Service>>,
    pins: Vec<Arc<PinKey>>,
    /// The key of the cohort tokens of release trains, shared by every service.
    cohorts: Arc<PinKey>,
    shared: Arc<Shared>,
    workers: usize,
    shutdown_timeout: Duration,
    limits: limits::ConnLimits,
    tls: Vec<Option<tokio_rustls::TlsAcceptor>>,
}

/// A running gateway: its worker threads and the switch that stops them.
pub struct Running {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    stop: watch::Sender<bool>,
    listening: Vec<(String, std::net::TcpListener)>,
}

/// Listening sockets another process handed over, by service name: a restart takes them
/// instead of binding, so no connection waiting in their queues is lost.
pub type InheritedSockets = std::collections::HashMap<String, Vec<std::net::TcpListener>>;

impl Running {
    /// Every service's listening sockets (copies of the workers'), for a process that takes
    /// over from this one.
    pub fn listening(&self) -> &[(String, std::net::TcpListener)] {
        &self.listening
    }

    /// Stops accepting, drains in-flight requests (bounded) and waits for the workers.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "worker failed"),
                Err(_) => tracing::error!("worker panicked"),
            }
        }
    }
}

impl Gateway {
    /// A gateway for every service of `config`, signing each service's pins with `secret`
    /// bound to the service's name.
    pub fn new(config: &Config, secret: PinSecret) -> Result<Gateway, GatewayError> {
        let shared = Arc::new(Shared::default());
        let mut services = Vec::new();
        let mut tls = Vec::new();
        for s in &config.services {
            let acceptor = s
                .tls
                .as_ref()
                .map(tls::acceptor)
                .transpose()
                .map_err(|message| GatewayError::Tls { service: s.name.as_str().to_owned(), message })?;
            tls.push(acceptor);
            services.push(Arc::new(Service::new(s, config.gateway.version_header_in_response, shared.clone())));
        }
        let workers = config
            .gateway
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let pins = services.iter().map(|s| Arc::new(secret.for_service(s.name()))).collect();
        let cohorts = Arc::new(secret.for_trains());
        let limits = limits::ConnLimits::new(&config.gateway, workers, limits::descriptor_limit());
        let shutdown_timeout = config.gateway.shutdown_timeout.0;
        Ok(Gateway { services, pins, cohorts, shared, workers, shutdown_timeout, limits, tls })
    }

    /// The services, in configuration order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.name() == name)
    }

    /// The limits and timeouts of client connections.
    pub fn limits(&self) -> &limits::ConnLimits {
        &self.limits
    }

    /// Every version's counters.
    pub fn metrics(&self) -> &Arc<MetricsRegistry> {
        &self.shared.metrics
    }

    /// The services' breaker and routing state, for `/metrics`.
    pub fn status(&self) -> status::ServiceStatus {
        status::ServiceStatus(self.services.clone())
    }

    /// Starts every service's local breaker on the current tokio runtime; they stop when the
    /// returned handles are dropped or aborted.
    pub fn spawn_breakers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.services
            .iter()
            .filter(|s| s.breaker().enabled)
            .map(|s| tokio::spawn(breaker::watch(s.clone(), s.breaker().clone())))
            .collect()
    }

    /// Binds every service's listeners and starts the worker threads.
    pub fn start(&self) -> Result<Running, GatewayError> {
        self.start_on(&mut InheritedSockets::new())
    }

    /// Like [`Gateway::start`], taking a service's sockets from `inherited` when they listen
    /// where the service is configured to, and binding the others. Inherited sockets are shared
    /// out over the workers, whatever their number.
    pub fn start_on(&self, inherited: &mut InheritedSockets) -> Result<Running, GatewayError> {
        let mut per_worker: Vec<Vec<WorkerListener>> = (0..self.workers).map(|_| Vec::new()).collect();
        let mut listening = Vec::new();
        for ((service, tls), pins) in self.services.iter().zip(&self.tls).zip(&self.pins) {
            let addr = service.settings.listen;
            let sockets = match inherited.remove(service.name()).filter(|s| listens_on(s, addr)) {
                Some(sockets) => sockets,
                None => bind_reuseport(addr, self.workers).map_err(|source| GatewayError::Bind {
                    service: service.name().to_owned(),
                    addr,
                    source,
                })?,
            };
            if let Some(first) = sockets.first()
                && let Ok(bound) = first.local_addr()
            {
                service.set_bound(bound);
            }
            for (index, socket) in sockets.into_iter().enumerate() {
                let copy = socket.try_clone().map_err(|source| GatewayError::Bind {
                    service: service.name().to_owned(),
                    addr,
                    source,
                })?;
                listening.push((service.name().to_owned(), copy));
                let listener = WorkerListener {
                    service: service.clone(),
                    socket,
                    tls: tls.clone(),
                    pins: pins.clone(),
                    cohorts: self.cohorts.clone(),
                };
                per_worker[index % self.workers].push(listener);
            }
        }
        tracing::info!(
            workers = self.workers,
            per_worker = self.limits.per_worker,
            nofile = limits::descriptor_limit(),
            "client connections: at most {} per worker",
            self.limits.per_worker
        );
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::new();
        for (index, listeners) in per_worker.into_iter().enumerate() {
            let stopped = stopped.clone();
            let (timeout, limits) = (self.shutdown_timeout, self.limits);
            let thread = std::thread::Builder::new()
                .name(format!("canary-worker-{index}"))
                .spawn(move || run_worker(index, listeners, stopped, timeout, limits))
                .map_err(GatewayError::Thread)?;
            threads.push(thread);
        }
        Ok(Running { threads, stop, listening })
    }
}

/// Whether inherited sockets listen on `addr` (any port when `addr`'s is 0).
fn listens_on(sockets: &[std::net::TcpListener], addr: std::net::SocketAddr) -> bool {
    !sockets.is_empty()
        && sockets.iter().all(|s| {
            s.local_addr()
                .is_ok_and(|bound| bound.ip() == addr.ip() && (addr.port() == 0 || bound.port() == addr.port()))
        })
}
