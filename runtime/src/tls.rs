//! A node's TLS: one certificate for its listener, which clients and peers share, and the same
//! certificate and certificate authorities for the connections it opens (to its peers, and to
//! the leader when it forwards an etcd request).
//!
//! The settings are etcd's (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`), with one difference: Keel serves clients and peers on one address, so
//! one certificate serves both, and it must be valid for TLS servers and clients alike (X.509
//! extended key usages `serverAuth` and `clientAuth`, or no extended key usage) and name every
//! address the node is reached by (IP or DNS subject alternative names).
//!
//! Data flow: `keel node` reads the files ([`NodeTls::from_files`]); `server.rs` wraps the
//! result in a `tls_reload::ReloadingTls`, which reads the files again when they change, and
//! hands its [`NodeTls::server_config`] to the listener's handshake (`tls_listener.rs`) and its
//! [`NodeTls::outbound`] to the peer transport and the etcd forwarder, whose connections then
//! verify the peer's certificate against the trusted authorities and present the node's own.
//! Under `--cfg madsim` none of it applies: the simulated network carries the same calls
//! without TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel::tls::{ClientTls, TlsError, TlsIdentity};

/// Longest TLS handshake a connection is given before it is closed, so that a peer that
/// connects and says nothing holds a connection slot for a bounded time only.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS of one node: its certificate and key, the certificate authorities it trusts, and
/// whether connecting clients must show a certificate those authorities signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTls {
    identity: TlsIdentity,
    outbound: ClientTls,
    client_cert_auth: bool,
    /// The certificate, key and trusted-authority files, when read from files: they are read
    /// again when they change (`tls_reload.rs`).
    files: Option<[PathBuf; 3]>,
}

impl NodeTls {
    /// The node serves `identity`, verifies its peers against `trusted_ca`, and with
    /// `client_cert_auth` refuses every connection (client or peer) without a certificate that
    /// `trusted_ca` signed.
    pub fn new(identity: TlsIdentity, trusted_ca: ClientTls, client_cert_auth: bool) -> Self {
        let outbound = trusted_ca.with_identity(identity.clone());
        Self { identity, outbound, client_cert_auth, files: None }
    }

    /// Reads the node's certificate, key and trusted authorities from PEM files.
    pub fn from_files(
        cert_file: &Path,
        key_file: &Path,
        trusted_ca_file: &Path,
        client_cert_auth: bool,
    ) -> Result<Self, TlsError> {
        let identity = TlsIdentity::from_files(cert_file, key_file)?;
        let trusted_ca = ClientTls::from_files(trusted_ca_file, None, None)?;
        let files = [cert_file.to_path_buf(), key_file.to_path_buf(), trusted_ca_file.to_path_buf()];
        Ok(Self { files: Some(files), ..Self::new(identity, trusted_ca, client_cert_auth) })
    }

    /// The files this TLS was read from (none when it was built from PEM in memory).
    pub fn files(&self) -> &[PathBuf] {
        self.files.as_ref().map_or(&[], |files| files.as_slice())
    }

    /// This TLS read again from its files, with the same `client_cert_auth`; `None` when it was
    /// not read from files.
    pub fn reread(&self) -> Option<Result<Self, TlsError>> {
        let [cert_file, key_file, trusted_ca_file] = self.files.as_ref()?;
        Some(Self::from_files(cert_file, key_file, trusted_ca_file, self.client_cert_auth))
    }

    /// Whether connections without a trusted client certificate are refused.
    pub fn client_cert_auth(&self) -> bool {
        self.client_cert_auth
    }

    /// How the node dials its peers: TLS, verifying them against the trusted authorities, and
    /// showing its own certificate.
    pub fn outbound(&self) -> &ClientTls {
        &self.outbound
    }

    /// The listener's rustls configuration (`tls_listener.rs`): the node's certificate, client
    /// certificates verified against the trusted authorities with `client_cert_auth`, and both
    /// HTTP/2 and HTTP/1.1 offered in the handshake (ALPN), for gRPC and for etcd's JSON
    /// gateway. The error says which part rustls refused.
    #[cfg(not(madsim))]
    pub fn server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
        use std::sync::Arc;
        // ring, as tonic's `tls-ring` uses for the node's outbound links: rustls marks its ring
        // provider deprecated for want of post-quantum key exchange, which aws-lc-rs has at the
        // price of a larger C build; switch both together.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = self.identity.certificate_chain().map_err(|error| error.to_string())?;
        let key = self.identity.private_key().map_err(|error| error.to_string())?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?;
        let builder = if self.client_cert_auth {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in self.outbound.trusted_certificates().map_err(|error| error.to_string())? {
                roots
                    .add(certificate)
                    .map_err(|error| format!("trusted_ca_file holds an unusable certificate: {error}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("trusted_ca_file cannot verify client certificates: {error}"))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|error| format!("cert_file and key_file cannot be used together: {error}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
