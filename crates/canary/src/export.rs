//! `canary export istio|gateway-api`: Kubernetes objects that route on the gateway's
//! `x-canary-version`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use canary_core::config::Config;
use canary_core::gateway_api::{self, GatewayApiOptions};
use canary_core::istio::{self, IstioOptions};
use clap::Args;

use crate::cli::{ExportArgs, ExportTarget};

/// `canary export gateway-api`.
#[derive(Debug, Args)]
pub struct GatewayApiArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "canary.toml")]
    pub config: PathBuf,
    /// Only this service (default: every service).
    #[arg(long)]
    pub service: Option<String>,
    /// `metadata.namespace` of the routes, where the backend Services live (default: left to
    /// `kubectl apply -n`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The Gateway the routes attach to.
    #[arg(long = "parent-ref", value_name = "NAME")]
    pub parent: String,
    /// The Gateway's namespace, when it is not the routes'.
    #[arg(long)]
    pub parent_namespace: Option<String>,
    /// The Gateway listener to attach to (its `sectionName`; default: every listener).
    #[arg(long, value_name = "LISTENER")]
    pub parent_section: Option<String>,
    /// A `Host` header value the route applies to (repeatable; `{service}` is replaced by the
    /// service's name). Default: every host of the listener.
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostnames: Vec<String>,
    /// The backend Service of a version; `{service}` and `{version}` are replaced.
    #[arg(long, value_name = "PATTERN", default_value = gateway_api::DEFAULT_BACKEND)]
    pub backend: String,
    /// The port of the backend Services.
    #[arg(long, default_value_t = gateway_api::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Writes what `args` asks for.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    match args.target {
        ExportTarget::Istio(a) => {
            let options = IstioOptions {
                namespace: a.namespace,
                host: a.host,
                public_hosts: a.public_hosts,
                version_label: a.version_label,
            };
            let yaml = istio::export(&load(&a.config)?, a.service.as_deref(), &options)?;
            write(yaml, a.output.as_deref())
        }
        ExportTarget::GatewayApi(a) => {
            let options = GatewayApiOptions {
                namespace: a.namespace,
                parent: a.parent,
                parent_namespace: a.parent_namespace,
                parent_section: a.parent_section,
                hostnames: a.hostnames,
                backend: a.backend,
                port: a.port,
            };
            let yaml = gateway_api::export(&load(&a.config)?, a.service.as_deref(), &options)?;
            write(yaml, a.output.as_deref())
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("{} is not valid", path.display()))
}

fn write(yaml: String, output: Option<&Path>) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, yaml).with_context(|| format!("cannot write {}", path.display())),
        None => Ok(crate::output::out!("{yaml}")?),
    }
}
