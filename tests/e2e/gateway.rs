//! etcd's HTTP gateway (`POST /v3/kv/range`, `/v3/watch`, ...) through a real client library:
//! Debian's `python3-etcd3gw`, driven by `etcd3gw_client.py`, against a 3-node cluster of node
//! processes: puts through every member, a prefix read, `create` (a transaction), leases with an
//! attached key, a watch that sees another member's put and delete, and a prefix delete.
//!
//! `#[ignore]`d because it needs `/usr/bin/python3` with etcd3gw; CI installs it and runs
//! `cargo test -p keel-runtime --test e2e -- --ignored etcd3gw`.

use std::process::Command;

use crate::cluster::Cluster;

/// Debian's interpreter, which sees Debian's python3-etcd3gw (a `python3` earlier on the PATH,
/// such as pyenv's, may not).
const PYTHON: &str = "/usr/bin/python3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3-etcd3gw (apt-get install python3-etcd3gw)"]
async fn etcd3gw_python_client_uses_the_json_gateway() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(&[1, 2, 3]).await;
    let endpoints = cluster.endpoints();
    let ports: Vec<&str> = endpoints.iter().map(|address| address.rsplit_once(':').expect("HOST:PORT").1).collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/etcd3gw_client.py");
    let output = Command::new(PYTHON)
        .arg(script)
        .arg("127.0.0.1")
        .args(&ports)
        .output()
        .expect("python3 runs (apt-get install python3-etcd3gw)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout == "ok\n",
        "etcd3gw_client.py failed\nstdout: {stdout}\nstderr: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
}
