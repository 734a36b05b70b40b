#![allow(dead_code)] // each test takes the files it needs

//! Certificates for the TLS tests, made at run time with rcgen and written as PEM files: a
//! certificate authority, a node certificate it signed (valid for `127.0.0.1` and `localhost`,
//! for TLS servers and clients alike, as a Keel node's must be), a client certificate it signed,
//! and a second, unrelated authority with its own client certificate, which the nodes must not
//! trust. Shared by `runtime/tests/tls.rs` and the end-to-end etcdctl suite.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The PEM files of one test's certificates.
pub struct Pki {
    /// The authority the nodes trust.
    pub ca: PathBuf,
    /// The nodes' certificate and key.
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// A client certificate and key the trusted authority signed.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// An authority the nodes do not trust, and a client certificate and key it signed.
    pub other_ca: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

impl Pki {
    /// Makes the certificates and writes them into `dir`.
    pub fn create(dir: &Path) -> Self {
        let (ca_pem, issuer) = authority("Keel test CA");
        let (node_cert, node_key) = leaf(&issuer, "keel-node", &["127.0.0.1", "localhost"], true);
        let (client_cert, client_key) = leaf(&issuer, "keel-client", &[], false);
        let (other_ca_pem, other_issuer) = authority("Unrelated CA");
        let (other_cert, other_key) = leaf(&other_issuer, "stranger", &[], false);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("a PEM file written");
            path
        };
        Self {
            ca: write("ca.pem", &ca_pem),
            node_cert: write("node.pem", &node_cert),
            node_key: write("node-key.pem", &node_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            other_ca: write("other-ca.pem", &other_ca_pem),
            other_client_cert: write("other-client.pem", &other_cert),
            other_client_key: write("other-client-key.pem", &other_key),
        }
    }
}

/// A self-signed authority: its certificate (PEM) and the issuer that signs with it.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("a key pair");
    let certificate = params.self_signed(&key).expect("a self-signed authority");
    (certificate.pem(), Issuer::new(params, key))
}

/// A certificate `issuer` signed for `names` (IP addresses or DNS names), for TLS clients, and
/// for servers too when `server`: its certificate and key (PEM).
fn leaf(issuer: &Issuer<'static, KeyPair>, name: &str, names: &[&str], server: bool) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("valid names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if server {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    let key = KeyPair::generate().expect("a key pair");
    let certificate = params.signed_by(&key, issuer).expect("a signed certificate");
    (certificate.pem(), key.serialize_pem())
}
