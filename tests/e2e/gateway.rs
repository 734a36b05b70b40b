//! etcd's HTTP gateway (`POST /v3/kv/range`, `/v3/watch`, ...) through real clients, each
//! against a 3-node cluster of node processes:
//!
//! * Debian's `python3-etcd3gw`, driven by `etcd3gw_client.py`: puts through every member, a
//!   prefix read, `create` (a transaction), leases with an attached key, a watch that sees
//!   another member's put and delete, and a prefix delete;
//! * Debian's `patroni` (3.0), whose etcd3 DCS is driven by `patroni_dcs.py` without PostgreSQL:
//!   the initialize race, the leader key taken under a lease, refused to a second member,
//!   released and taken by it, and member keys reaching each member's cache through its watch.
//!
//! `#[ignore]`d because they need `/usr/bin/python3` with those packages; CI installs them and
//! runs `cargo test -p keel-runtime --test e2e -- --ignored etcd3gw patroni`.

use std::process::Command;

use crate::cluster::Cluster;

/// Debian's interpreter, which sees Debian's python3-etcd3gw (a `python3` earlier on the PATH,
/// such as pyenv's, may not).
const PYTHON: &str = "/usr/bin/python3";

/// Runs `tests/e2e/<script>` with `arguments` and asserts that it printed `ok`, with everything
/// it and the nodes said if not.
fn run_script(cluster: &Cluster, script: &str, arguments: &[String]) {
    let path = format!("{}/../tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(PYTHON).arg(&path).args(arguments).output().expect("/usr/bin/python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout == "ok\n",
        "{script} failed\nstdout: {stdout}\nstderr: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-etcd3gw (apt-get install python3-etcd3gw)"]
async fn etcd3gw_python_client_uses_the_json_gateway() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(&[1, 2, 3]).await;
    let ports =
        cluster.endpoints().into_iter().map(|address| address.rsplit_once(':').expect("HOST:PORT").1.to_owned());
    let arguments: Vec<String> = std::iter::once("127.0.0.1".to_owned()).chain(ports).collect();
    run_script(&cluster, "etcd3gw_client.py", &arguments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs patroni (apt-get install patroni)"]
async fn patroni_etcd3_dcs_keeps_its_cluster_state_in_keel() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(&[1, 2, 3]).await;
    run_script(&cluster, "patroni_dcs.py", &[cluster.endpoints().join(",")]);
}

/// The same over mutual TLS: Patroni's HTTP/1.1 client must get through the nodes' handshake
/// (which offers HTTP/1.1 beside HTTP/2) with its client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs patroni (apt-get install patroni)"]
async fn patroni_etcd3_dcs_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, pki) = crate::tls::secure_cluster(dir.path()).await;
    let files = [&pki.ca, &pki.client_cert, &pki.client_key].map(|path| path.display().to_string());
    let arguments: Vec<String> = std::iter::once(cluster.endpoints().join(",")).chain(files).collect();
    run_script(&cluster, "patroni_dcs.py", &arguments);
}
