//! TLS material for Keel's connections: PEM certificates and private keys, read from files and
//! checked when they are loaded.
//!
//! The client library ([`crate::client`]) dials nodes with a [`ClientTls`]; a node
//! (`keel-runtime`) serves its listener with its own certificate and dials its peers with a
//! [`ClientTls`] built from the same files. Checking the PEM text on load means that a wrong file
//! is named at startup, in a message that says which file and what is wrong with it, instead of
//! failing later at the first handshake without saying why.
//!
//! Under `--cfg madsim` the settings are accepted and ignored (madsim-tonic's simulated network
//! has no TLS): the simulator checks the protocol, not the encryption.

use std::fmt;
use std::path::Path;

use crate::client::error_chain;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::Endpoint;
#[cfg(not(madsim))]
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Largest PEM file read (certificate chains and bundles are a few KiB; this only stops a wrong
/// path, such as a device or a log file, from being read into memory whole).
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// Why TLS material could not be loaded. Each message names the file (or the setting) and says
/// what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the {what} {path}: {reason}")]
    Read {
        /// What the file should hold ("CA certificate file", ...).
        what: &'static str,
        /// The path given.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The text holds no PEM item of the expected kind, or a malformed one.
    #[error("the {what} {source_name} {reason}")]
    Pem {
        /// What the text should hold.
        what: &'static str,
        /// Where the text came from (a path, or "given in memory").
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A client certificate was given without its key, or a key without its certificate.
    #[error("a client certificate and its key go together: give both --cert and --key, or neither")]
    IncompleteIdentity,
    /// A client certificate was given without the certificate authorities to verify nodes by.
    #[error("a client certificate needs --cacert too: the client verifies the nodes it shows its certificate to")]
    NoTrustedCa,
}

/// A certificate chain and the private key of its first certificate, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("cert_pem_bytes", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// An identity from PEM text: `cert_pem` must hold at least one certificate and `key_pem`
    /// a private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Self, TlsError> {
        check_certificates("certificate", "given in memory", &cert_pem)?;
        check_private_key("key", "given in memory", &key_pem)?;
        Ok(Self { cert_pem, key_pem })
    }

    /// An identity read from a certificate file and a key file.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let cert_pem = read_pem("certificate file", cert_file)?;
        check_certificates("certificate file", &cert_file.display().to_string(), &cert_pem)?;
        let key_pem = read_pem("key file", key_file)?;
        check_private_key("key file", &key_file.display().to_string(), &key_pem)?;
        Ok(Self { cert_pem, key_pem })
    }

    /// The certificate chain, parsed (for a rustls configuration).
    pub fn certificate_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certificates("certificate", &self.cert_pem)
    }

    /// The private key, parsed (for a rustls configuration).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|error| TlsError::Pem {
            what: "key",
            source_name: "given".to_owned(),
            reason: format!("holds no usable private key: {error}"),
        })
    }

    /// The identity in tonic's form.
    #[cfg(not(madsim))]
    pub fn to_tonic(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// How a client verifies the nodes it dials, and what it shows them: the certificate
/// authorities it trusts, and optionally its own certificate for nodes that require one
/// (`client_cert_auth`). With a `ClientTls`, every connection is TLS, whatever scheme an
/// endpoint was written with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    trusted_ca_pem: Vec<u8>,
    identity: Option<TlsIdentity>,
    domain_name: Option<String>,
}

impl ClientTls {
    /// Trusts the certificate authorities in `trusted_ca_pem` (one or more PEM certificates).
    pub fn from_pem(trusted_ca_pem: Vec<u8>) -> Result<Self, TlsError> {
        check_certificates("CA certificate", "given in memory", &trusted_ca_pem)?;
        Ok(Self { trusted_ca_pem, identity: None, domain_name: None })
    }

    /// etcdctl's `--cacert`, `--cert` and `--key`: the CA file, and the client's certificate
    /// and key files (both or neither).
    pub fn from_files(ca_file: &Path, cert_file: Option<&Path>, key_file: Option<&Path>) -> Result<Self, TlsError> {
        let trusted_ca_pem = read_pem("CA certificate file", ca_file)?;
        check_certificates("CA certificate file", &ca_file.display().to_string(), &trusted_ca_pem)?;
        let identity = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some(TlsIdentity::from_files(cert, key)?),
            (None, None) => None,
            _ => return Err(TlsError::IncompleteIdentity),
        };
        Ok(Self { trusted_ca_pem, identity, domain_name: None })
    }

    /// Presents `identity` to nodes that ask for a client certificate.
    pub fn with_identity(self, identity: TlsIdentity) -> Self {
        Self { identity: Some(identity), ..self }
    }

    /// Verifies every node's certificate against `name` instead of the host of the address
    /// dialed (for nodes reached by an address their certificate does not name).
    pub fn with_domain_name(self, name: impl Into<String>) -> Self {
        Self { domain_name: Some(name.into()), ..self }
    }

    /// The certificate authorities trusted, parsed (for a rustls configuration).
    pub fn trusted_certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certificates("CA certificate", &self.trusted_ca_pem)
    }

    /// The settings in tonic's form.
    #[cfg(not(madsim))]
    pub fn to_tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.trusted_ca_pem));
        if let Some(identity) = &self.identity {
            config = config.identity(identity.to_tonic());
        }
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// The endpoint to dial for `address` (`host:port`, `http://host:port` or `https://host:port`):
/// over TLS when `tls` is given (an `http://` scheme becomes `https://`), in plain text
/// otherwise. The error is tonic's reason, for the caller to wrap.
pub fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<Endpoint, String> {
    let address = address.trim();
    let rest = address.strip_prefix("http://").or_else(|| address.strip_prefix("https://"));
    let uri = match (tls, rest) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        (Some(_), None) if !address.contains("://") => format!("https://{address}"),
        (None, None) if !address.contains("://") => format!("http://{address}"),
        _ => address.to_owned(),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|error| error_chain(&error))?;
    #[cfg(not(madsim))]
    if let Some(tls) = tls {
        return endpoint.tls_config(tls.to_tonic()).map_err(|error| error_chain(&error));
    }
    Ok(endpoint)
}

/// Reads a PEM file of at most [`PEM_FILE_BYTES_MAX`] bytes.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let failed = |reason: String| TlsError::Read { what, path: path.display().to_string(), reason };
    let length = std::fs::metadata(path).map_err(|error| failed(error.to_string()))?.len();
    if length > PEM_FILE_BYTES_MAX {
        return Err(failed(format!("it is {length} bytes, more than a PEM file of {PEM_FILE_BYTES_MAX} bytes")));
    }
    std::fs::read(path).map_err(|error| failed(error.to_string()))
}

/// The certificates of `pem`, in order.
fn certificates(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|error| TlsError::Pem {
        what,
        source_name: "given".to_owned(),
        reason: format!("holds a malformed certificate: {error}"),
    })
}

/// Checks that `pem` holds at least one certificate and no malformed one.
fn check_certificates(what: &'static str, source_name: &str, pem: &[u8]) -> Result<(), TlsError> {
    let failed = |reason: String| TlsError::Pem { what, source_name: source_name.to_owned(), reason };
    let mut count = 0usize;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| failed(format!("holds a malformed certificate: {error}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(failed("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(())
}

/// Checks that `pem` holds a private key.
fn check_private_key(what: &'static str, source_name: &str, pem: &[u8]) -> Result<(), TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map(|_| ()).map_err(|error| TlsError::Pem {
        what,
        source_name: source_name.to_owned(),
        reason: format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_PEM: &[u8] = b"hello";
    const BROKEN: &[u8] = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";

    #[test]
    fn text_without_a_certificate_is_refused_with_what_was_expected() {
        let error = ClientTls::from_pem(NOT_PEM.to_vec()).unwrap_err();
        assert!(error.to_string().contains("holds no PEM certificate"), "{error}");
        let error = ClientTls::from_pem(BROKEN.to_vec()).unwrap_err();
        assert!(error.to_string().contains("CA certificate"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = ClientTls::from_files(Path::new("/nonexistent/ca.pem"), None, None).unwrap_err();
        assert!(matches!(&error, TlsError::Read { path, .. } if path == "/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let directory = std::env::temp_dir().join(format!("keel-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let ca = directory.join("ca.pem");
        // A syntactically valid PEM certificate block: the check parses PEM, not X.509.
        std::fs::write(&ca, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let error = ClientTls::from_files(&ca, Some(&ca), None).unwrap_err();
        assert_eq!(error, TlsError::IncompleteIdentity);
        let error = ClientTls::from_files(&ca, Some(&ca), Some(&ca)).unwrap_err();
        assert!(error.to_string().contains("no usable private key"), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn endpoints_take_the_scheme_that_the_tls_setting_says() {
        assert_eq!(endpoint("127.0.0.1:1", None).unwrap().uri().to_string(), "http://127.0.0.1:1/");
        assert_eq!(endpoint("http://127.0.0.1:1", None).unwrap().uri().to_string(), "http://127.0.0.1:1/");
        let tls = ClientTls { trusted_ca_pem: Vec::new(), identity: None, domain_name: None };
        assert_eq!(endpoint("127.0.0.1:1", Some(&tls)).unwrap().uri().to_string(), "https://127.0.0.1:1/");
        assert_eq!(endpoint("http://127.0.0.1:1", Some(&tls)).unwrap().uri().to_string(), "https://127.0.0.1:1/");
        assert!(endpoint("not an address", None).is_err());
    }
}
