//! etcd over TLS with client certificates (`--client-cert-auth`): the store trusts the
//! configured CA, shows its certificate, and a client without one is refused.

mod support {
    #[allow(
        dead_code,
        reason = "the shared etcd helper also restarts and sets up users, which these tests do not need"
    )]
    pub mod etcd_server;
}

use std::path::Path;

use canary_store::{EtcdOptions, EtcdStore, EtcdTls, Store};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::etcd_server::EtcdServer;

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, as PEM files.
struct Pki {
    ca: String,
    client: String,
}

fn write_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "canary test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, common_name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "etcd");
    let (client_cert, client_key) = leaf(vec!["canary".into()], "canary");
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("client.pem", client_cert.clone()),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    Pki { ca: ca_cert.pem(), client: client_cert + &client_key }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_etcd_over_tls_with_its_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let args = [
        format!("--cert-file={}", file("server.pem")),
        format!("--key-file={}", file("server-key.pem")),
        format!("--trusted-ca-file={}", file("ca.pem")),
        "--client-cert-auth".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = EtcdTls { ca_pem: Some(pki.ca.clone().into_bytes()), identity_pem: Some(pki.client.into_bytes()) };
    let server = EtcdServer::start_tls(&args, client).await;
    assert!(server.endpoint().starts_with("https://"));

    let store = server.store().await;
    store.put("/canary/over-tls", b"yes".to_vec()).await.expect("a write over TLS");
    assert_eq!(store.get("/canary/over-tls").await.unwrap().unwrap().value, b"yes");

    let without_certificate = EtcdOptions {
        tls: Some(EtcdTls { ca_pem: Some(pki.ca.into_bytes()), identity_pem: None }),
        ..EtcdOptions::default()
    };
    let stranger = EtcdStore::connect(&[server.endpoint()], without_certificate).await.unwrap();
    let refused = stranger.get("/canary/over-tls").await;
    assert!(refused.is_err(), "a client without a certificate must not read: {refused:?}");

    let endpoints = [server.endpoint()];
    let system_roots = EtcdOptions { tls: Some(EtcdTls::default()), ..EtcdOptions::default() };
    let unverified = EtcdStore::connect(&endpoints, system_roots).await.unwrap().get("/canary/over-tls").await;
    assert!(unverified.is_err(), "a server the system roots do not vouch for is not trusted: {unverified:?}");

    let plain_endpoints = [server.endpoint().replace("https://", "http://")];
    let plain =
        EtcdStore::connect(&plain_endpoints, EtcdOptions::default()).await.unwrap().get("/canary/over-tls").await;
    assert!(plain.is_err(), "plain HTTP to a TLS port gets nothing");
}
