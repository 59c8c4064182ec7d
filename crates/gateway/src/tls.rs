//! TLS for client connections: rustls with ALPN offering HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::Arc;

use canary_core::config::TlsConfig;
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor of a service's certificate and key.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs = read_pem(&config.cert, |r| rustls_pemfile::certs(r).collect::<Result<Vec<_>, _>>())?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", config.cert.display()));
    }
    let key = read_pem(&config.key, |r| rustls_pemfile::private_key(r))?
        .ok_or_else(|| format!("{}: no private key found", config.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{}: {e}", config.cert.display()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn read_pem<T>(path: &Path, parse: impl FnOnce(&mut dyn std::io::BufRead) -> std::io::Result<T>) -> Result<T, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    parse(&mut reader).map_err(|e| format!("{}: invalid PEM: {e}", path.display()))
}
