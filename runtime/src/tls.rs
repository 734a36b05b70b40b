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
//! Data flow: `keel node` reads the files ([`NodeTls::from_files`]); `server.rs` hands
//! [`NodeTls::server_config`] to tonic's server, and [`NodeTls::outbound`] to the peer transport
//! and the etcd forwarder, whose connections then verify the peer's certificate against the
//! trusted authorities and present the node's own. Under `--cfg madsim` none of it applies:
//! the simulated network carries the same calls without TLS.

use std::path::Path;
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
}

impl NodeTls {
    /// The node serves `identity`, verifies its peers against `trusted_ca`, and with
    /// `client_cert_auth` refuses every connection (client or peer) without a certificate that
    /// `trusted_ca` signed.
    pub fn new(identity: TlsIdentity, trusted_ca: ClientTls, client_cert_auth: bool) -> Self {
        let outbound = trusted_ca.with_identity(identity.clone());
        Self { identity, outbound, client_cert_auth }
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
        Ok(Self::new(identity, trusted_ca, client_cert_auth))
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

    /// The listener's settings in tonic's form.
    #[cfg(not(madsim))]
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        let config =
            tonic::transport::ServerTlsConfig::new().identity(self.identity.to_tonic()).timeout(HANDSHAKE_TIMEOUT);
        if self.client_cert_auth {
            let authorities = tonic::transport::Certificate::from_pem(self.outbound.trusted_ca_pem());
            config.client_ca_root(authorities)
        } else {
            config
        }
    }
}
