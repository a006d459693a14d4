//! AMQPS: the TLS listener next to the plain one. A client with a certificate signed by the
//! configured CA completes the AMQP handshake over TLS and publishes and gets a message; with
//! `--tls-fail-if-no-peer-cert`, a client without a certificate or with one from another CA is
//! refused in the TLS handshake; plain AMQP on the TLS port gets nowhere; the plain listener is
//! unaffected. Certificates are made for the test (rcgen).

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A CA, and certificates it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("ca key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    /// A leaf certificate for `names` and its key, both PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path.to_string_lossy().into_owned()
}

fn der_cert(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("cert pem")
}

fn der_key(pem: &str) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key pem")
}

/// A TLS client trusting `ca`, presenting `identity` (certificate and key PEM) if given.
fn connector(ca: &Ca, identity: Option<&(String, String)>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).expect("root");
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![der_cert(cert)], der_key(key))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// TLS connection to `addr` as `localhost`; the handshake's outcome, and the stream.
async fn tls_connect(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector.connect(name, tcp).await?;
    // With TLS 1.3 a refused client certificate is reported after the client's handshake ends:
    // the first read sees the server's alert.
    use tokio::io::AsyncWriteExt;
    tls.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut first = [0u8; 1];
    use tokio::io::AsyncReadExt;
    match tls.read(&mut first).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(tls),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_client_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("warren test CA");
    let (server_cert, server_key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let client = ca.leaf(&["client"]);
    let stranger = Ca::new("another CA").leaf(&["client"]);
    let cert_file = write(dir.path(), "server.pem", &server_cert);
    let key_file = write(dir.path(), "server.key", &server_key);
    let ca_file = write(dir.path(), "ca.pem", &ca.issuer.pem());

    let b = start_with(|c| {
        c.amqps_listen = Some(([127, 0, 0, 1], 0).into());
        c.tls_cert_file = Some(cert_file.into());
        c.tls_key_file = Some(key_file.into());
        c.tls_ca_file = Some(ca_file.into());
        c.tls_verify_peer = true;
        c.tls_fail_if_no_peer_cert = true;
    })
    .await;
    let tls_addr = b.amqps_addr.expect("amqps listener");

    // A client with a certificate from the CA: the whole AMQP handshake, then a round trip.
    let tcp = TcpStream::connect(tls_addr).await.expect("tcp");
    let tls = connector(&ca, Some(&client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with a client certificate");
    let mut r = Raw::over(tls).open_as(Handshake::default()).await;
    r.open_channel(1).await;
    r.declare(1, "over.tls", QOpts::default()).await;
    let body = vec![7u8; 300_000];
    r.publish(1, "", "over.tls", &body).await;
    let got = r.get(1, "over.tls", true).await.expect("message over TLS");
    assert_eq!(got.body, body);
    // The management API shows it as a TLS connection on the AMQPS port.
    let (status, listing) = http_get(b.http_addr, "/api/connections", Some(("guest", "guest")));
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("json");
    assert_eq!(listing[0]["ssl"], serde_json::json!(true), "{listing}");
    assert_eq!(listing[0]["port"], serde_json::json!(tls_addr.port()));
    r.close().await;

    // Without a certificate, or with one the CA did not sign: refused in the TLS handshake.
    assert!(tls_connect(&connector(&ca, None), tls_addr).await.is_err());
    assert!(tls_connect(&connector(&ca, Some(&stranger)), tls_addr)
        .await
        .is_err());

    // Plain AMQP on the TLS port gets a TLS alert record (content type 21), then the socket closes.
    let mut plain = Raw::connect(tls_addr).await;
    plain.send(b"AMQP\x00\x00\x09\x01").await;
    let (answer, closed) = plain.read_raw(64, std::time::Duration::from_secs(12)).await;
    assert!(closed, "the TLS port kept a plain client open");
    assert_eq!(answer.first(), Some(&21), "{answer:?}");

    // The plain listener still works.
    assert_alive(b.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_the_broker_from_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = warren::Config::ephemeral(dir.path().to_owned());
    config.amqps_listen = Some(([127, 0, 0, 1], 0).into());
    let missing = warren::Server::bind(config.clone()).await.err();
    assert!(
        missing.is_some_and(|e| e.to_string().contains("--tls-cert-file")),
        "no certificate configured"
    );
    config.tls_cert_file = Some(dir.path().join("nope.pem"));
    config.tls_key_file = Some(dir.path().join("nope.key"));
    let unreadable = warren::Server::bind(config).await.err();
    assert!(
        unreadable.is_some_and(|e| e.to_string().contains("nope.pem")),
        "unreadable certificate file"
    );
}

/// `/api/health/checks/certificate-expiration/N/UNIT` looks at the AMQPS listener's
/// certificate: 503 when it expires within that time (here: one that expired already), 200 when
/// it does not (one valid until 2099); and the listener checks see the AMQPS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_see_the_tls_listener_and_its_certificate_expiry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("warren test CA");
    for (name, not_after, expiring) in [
        ("expired", rcgen::date_time_ymd(2021, 1, 1), true),
        ("valid", rcgen::date_time_ymd(2099, 1, 1), false),
    ] {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = not_after;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.issuer).expect("cert");
        let cert_file = write(dir.path(), &format!("{name}.pem"), &cert.pem());
        let key_file = write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        let b = start_with(|c| {
            c.amqps_listen = Some(([127, 0, 0, 1], 0).into());
            c.tls_cert_file = Some(cert_file.clone().into());
            c.tls_key_file = Some(key_file.into());
        })
        .await;
        let get = |path: &str| http_get(b.http_addr, path, Some(("guest", "guest")));
        let (status, body) = get("/api/health/checks/certificate-expiration/1/years");
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        if expiring {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["reason"], "Certificates expiring");
            assert_eq!(body["expired"][0]["certfile"], cert_file.as_str());
        } else {
            assert_eq!((status, &body), (200, &serde_json::json!({"status": "ok"})));
        }
        let tls_port = b.amqps_addr.expect("amqps").port();
        assert_eq!(
            get(&format!("/api/health/checks/port-listener/{tls_port}")).0,
            200
        );
        assert_eq!(
            get("/api/health/checks/protocol-listener/amqp%2Fssl").0,
            200
        );
        b.stop().await;
    }
}
