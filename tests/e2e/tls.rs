//! TLS end to end: three `keel node` processes started with etcd's TLS flags (`--cert-file`,
//! `--key-file`, `--trusted-ca-file`, `--client-cert-auth`), certificates made at run time
//! (`pki.rs`). The cluster must elect and replicate over its mutually authenticated peer links;
//! the `keel` command line and `etcdctl` must work with `--cacert`, `--cert` and `--key`, and
//! fail without a client certificate or in plain text.
//!
//! The etcdctl test is `#[ignore]`d like the rest of the etcdctl suite (it needs
//! `/usr/bin/etcdctl`); CI runs it with `-- --ignored etcdctl`.

use std::path::Path;
use std::process::{Command, Output};

use keel::client::Consistency;
use keel::tls::ClientTls;

use crate::cluster::{Cluster, KEEL};
use crate::pki::Pki;

/// A 3-node cluster serving TLS and requiring client certificates, and its certificates.
pub async fn secure_cluster(dir: &Path) -> (Cluster, Pki) {
    let pki = Pki::create(dir);
    let flags = [
        format!("--cert-file={}", pki.node_cert.display()),
        format!("--key-file={}", pki.node_key.display()),
        format!("--trusted-ca-file={}", pki.ca.display()),
        "--client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tls = ClientTls::from_files(&pki.ca, Some(&pki.client_cert), Some(&pki.client_key)).expect("client TLS");
    let cluster = Cluster::start_with_tls(3, &flags, Some(tls));
    cluster.leader(&[1, 2, 3]).await;
    (cluster, pki)
}

fn keel(args: &[&str]) -> Output {
    Command::new(KEEL).args(args).output().expect("keel runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keel_command_line_works_over_tls_and_only_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, pki) = secure_cluster(dir.path()).await;
    let endpoints = cluster.endpoints().join(",");
    let (ca, cert, key) =
        (pki.ca.to_str().unwrap(), pki.client_cert.to_str().unwrap(), pki.client_key.to_str().unwrap());
    let secure = ["--endpoints", &endpoints, "--cacert", ca, "--cert", cert, "--key", key, "--timeout", "5"];
    let put = keel(&[&["put", "/tls/cli", "yes"], &secure[..]].concat());
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get = keel(&[&["get", "/tls/cli"], &secure[..]].concat());
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert!(String::from_utf8_lossy(&get.stdout).contains("yes"), "{}", String::from_utf8_lossy(&get.stdout));

    // Without a client certificate, and in plain text, nothing is written.
    let anonymous = keel(&["put", "/tls/anonymous", "x", "--endpoints", &endpoints, "--cacert", ca, "--timeout", "3"]);
    assert!(!anonymous.status.success(), "a client without a certificate is refused");
    let plain = keel(&["put", "/tls/plain", "x", "--endpoints", &endpoints, "--timeout", "3"]);
    assert!(!plain.status.success(), "plain text is refused");
    let missing = keel(&[&["get", "/tls/cli"], &secure[..4], &["--cert", cert]].concat());
    assert_eq!(missing.status.code(), Some(2), "--cert without --key is a usage error");
    let read = cluster.client().get(["/tls/anonymous", "/tls/plain"], Consistency::Linearizable).await.unwrap();
    assert!(read.is_empty(), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, pki) = secure_cluster(dir.path()).await;
    let https: Vec<String> = cluster.endpoints().iter().map(|address| format!("https://{address}")).collect();
    let certificates = [
        format!("--cacert={}", pki.ca.display()),
        format!("--cert={}", pki.client_cert.display()),
        format!("--key={}", pki.client_key.display()),
    ];
    let etcdctl = |endpoints: &[String], tls: &[String], args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--dial-timeout=3s", "--command-timeout=10s"])
            .args(tls)
            .args(args)
            .output()
            .expect("etcdctl runs (apt-get install etcd-client)")
    };
    let ok = |args: &[&str]| {
        let output = etcdctl(&https, &certificates, args);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "etcdctl {args:?}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    // Every member takes the write: a follower forwards it to the leader over TLS.
    for (index, endpoint) in https.iter().enumerate() {
        let output = etcdctl(std::slice::from_ref(endpoint), &certificates, &["put", &format!("/tls/{index}"), "v"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(ok(&["get", "--prefix", "/tls/", "--keys-only"]), "/tls/0\n\n/tls/1\n\n/tls/2\n\n");
    // etcdctl 3.4 prints the health of each endpoint on standard error.
    let health = etcdctl(&https, &certificates, &["endpoint", "health"]);
    let text = String::from_utf8_lossy(&health.stderr);
    assert!(health.status.success(), "{text}");
    assert_eq!(text.matches("is healthy").count(), 3, "{text}");
    let members: serde_json::Value = serde_json::from_str(&ok(&["member", "list", "-w", "json"])).unwrap();
    let urls: Vec<&str> =
        members["members"].as_array().unwrap().iter().filter_map(|member| member["clientURLs"][0].as_str()).collect();
    assert_eq!(urls.len(), 3, "{members}");
    assert!(urls.iter().all(|url| url.starts_with("https://")), "{urls:?}");

    // Refused: no client certificate, and plain text.
    let anonymous = etcdctl(&https, &certificates[..1], &["put", "/tls/anonymous", "x"]);
    assert!(!anonymous.status.success(), "{}", String::from_utf8_lossy(&anonymous.stdout));
    let plain = etcdctl(&cluster.endpoints(), &[], &["put", "/tls/plain", "x"]);
    assert!(!plain.status.success(), "{}", String::from_utf8_lossy(&plain.stdout));
    let keys = ok(&["get", "--prefix", "/tls/", "--keys-only"]);
    assert_eq!(keys, "/tls/0\n\n/tls/1\n\n/tls/2\n\n", "the refused writes did not happen");

    // etcd authentication with a certificate login: the client certificate names `keel-client`.
    ok(&["user", "add", "root:rootpw"]);
    ok(&["user", "grant-role", "root", "root"]);
    ok(&["role", "add", "tls"]);
    ok(&["role", "grant-permission", "tls", "readwrite", "/tls/", "--prefix"]);
    ok(&["user", "add", "keel-client", "--no-password"]);
    ok(&["user", "grant-role", "keel-client", "tls"]);
    ok(&["auth", "enable"]);
    assert_eq!(ok(&["put", "/tls/by-certificate", "v"]), "OK\n");
    let outside = etcdctl(&https, &certificates, &["put", "/elsewhere", "x"]);
    assert!(String::from_utf8_lossy(&outside.stderr).contains("permission denied"), "{outside:?}");
    ok(&["--user", "root:rootpw", "put", "/elsewhere", "root"]);
}
