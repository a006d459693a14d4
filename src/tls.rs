//! AMQPS: the TLS settings of the second listener (RabbitMQ's `listeners.ssl` and `ssl_options`),
//! turned into a rustls server configuration. Certificates and keys are PEM files; with
//! `verify_peer` clients are asked for a certificate signed by the configured CA, and with
//! `fail_if_no_peer_cert` one is required.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--amqps-listen needs --tls-cert-file and --tls-key-file")]
    MissingFiles,
    #[error("--tls-verify-peer needs --tls-ca-file (the CA that signs client certificates)")]
    MissingCa,
    #[error("cannot read {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use warren_cluster::link::tls::{self as link_tls, LinkTlsError};
    link_tls::certificates(path).map_err(|e| match e {
        LinkTlsError::Pem { source, .. } => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
        _ => TlsError::NoCertificate(path.to_owned()),
    })
}

/// The acceptor for the AMQPS listener, from the configuration's `tls_*` settings.
pub fn acceptor(config: &Config) -> Result<TlsAcceptor, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err(TlsError::MissingFiles);
    };
    let certs = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Pem {
        path: key_file.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if config.tls_verify_peer {
        let ca_file = config.tls_ca_file.as_ref().ok_or(TlsError::MissingCa)?;
        let mut roots = RootCertStore::empty();
        for ca in certificates(ca_file)? {
            roots.add(ca)?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if config.tls_fail_if_no_peer_cert {
            verifier.build()?
        } else {
            verifier.allow_unauthenticated().build()?
        };
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
