//! The cluster link's TLS: every node presents its certificate (the same PEM files as its AMQPS
//! listener) and requires its peer's, both signed by the cluster's CA; a caller checks that the
//! certificate names the host it called.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::LinkTls;

#[derive(Debug, thiserror::Error)]
pub enum LinkTlsError {
    #[error("cannot read {path}: {source}")]
    Pem {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("cluster link TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cluster link TLS peer verification: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The certificates of a PEM file (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkTlsError> {
    let pem = |source| LinkTlsError::Pem {
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(LinkTlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

impl LinkTls {
    /// Mutual TLS from PEM files: this node's certificate chain and key, and the CA that signs
    /// every node's certificate.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<LinkTls, LinkTlsError> {
        let chain = certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| LinkTlsError::Pem {
            path: key.display().to_string(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        for c in certificates(ca)? {
            roots.add(c)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(LinkTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}
