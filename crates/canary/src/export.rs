//! `canary export istio`: the Istio objects that route on the gateway's `x-canary-version`.

use anyhow::Context;
use canary_core::config::Config;
use canary_core::istio::{IstioOptions, export};

use crate::cli::{ExportArgs, ExportTarget};

/// Writes what `args` asks for.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    match args.target {
        ExportTarget::Istio(istio) => {
            let config =
                Config::load(&istio.config).with_context(|| format!("{} is not valid", istio.config.display()))?;
            let options = IstioOptions {
                namespace: istio.namespace,
                host: istio.host,
                public_hosts: istio.public_hosts,
                version_label: istio.version_label,
            };
            let yaml = export(&config, istio.service.as_deref(), &options)?;
            match istio.output {
                Some(path) => {
                    std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?
                }
                None => crate::output::out!("{yaml}")?,
            }
            Ok(())
        }
    }
}
