//! Settings: file parsing, flag precedence and validation messages.

use super::*;

fn valid() -> NodeSettings {
    NodeSettings {
        id: Some(1),
        listen: Some("127.0.0.1:7001".into()),
        data_dir: Some("/tmp/keel-test".into()),
        initial_cluster: Some("1=127.0.0.1:7001,2=127.0.0.1:7002,3=localhost:7003".into()),
        ..NodeSettings::default()
    }
}

fn error(settings: NodeSettings) -> String {
    settings.validate().map(|_| ()).unwrap_err().0
}

#[test]
fn a_complete_node_is_valid_with_defaults() {
    let node = valid().validate().unwrap();
    assert!(!node.joining);
    assert_eq!(node.server.listen_addr, "127.0.0.1:7001".parse().unwrap());
    assert_eq!(node.server.node.initial_members.len(), 3);
    assert_eq!(node.server.node.initial_members[&3], "localhost:7003");
    assert_eq!(node.server.node.raft.heartbeat_interval_ms, 100);
    assert_eq!(node.server.data_dir.as_deref(), Some(Path::new("/tmp/keel-test")));
    assert_eq!(node.metrics_listen, None);
}

#[test]
fn a_node_outside_the_initial_cluster_is_joining() {
    let node = NodeSettings { id: Some(4), ..valid() }.validate().unwrap();
    assert!(node.joining);
    let alone = NodeSettings { initial_cluster: None, ..valid() }.validate().unwrap();
    assert!(alone.joining);
}

#[test]
fn missing_and_invalid_fields_are_named() {
    assert!(error(NodeSettings { id: None, ..valid() }).contains("--id"));
    assert!(error(NodeSettings { id: Some(0), ..valid() }).contains("id must be 1 or more"));
    assert!(error(NodeSettings { data_dir: None, ..valid() }).contains("data_dir"));
    assert!(error(NodeSettings { listen: Some("localhost".into()), ..valid() }).starts_with("listen:"));
    assert!(error(NodeSettings { metrics_listen: Some("nope".into()), ..valid() }).starts_with("metrics_listen:"));
    for cluster in ["1=127.0.0.1", "x=127.0.0.1:1", "1=127.0.0.1:1,1=127.0.0.1:2", "1=:7001", "0=a:1", ","] {
        let message = error(NodeSettings { initial_cluster: Some(cluster.into()), ..valid() });
        assert!(message.starts_with("initial_cluster"), "{cluster}: {message}");
    }
}

#[test]
fn zero_limits_are_refused_by_name() {
    let cases: [(&str, NodeSettings); 7] = [
        ("request_queue_max", NodeSettings { request_queue_max: Some(0), ..valid() }),
        ("watchers_max", NodeSettings { watchers_max: Some(0), ..valid() }),
        ("connections_max", NodeSettings { connections_max: Some(0), ..valid() }),
        ("heartbeat_interval_ms", NodeSettings { heartbeat_interval_ms: Some(0), ..valid() }),
        ("peer_queue_max", NodeSettings { peer_queue_max: Some(0), ..valid() }),
        ("snapshot_interval_entries", NodeSettings { snapshot_interval_entries: Some(0), ..valid() }),
        ("value_bytes_max", NodeSettings { value_bytes_max: Some(0), ..valid() }),
    ];
    for (name, settings) in cases {
        let message = error(settings);
        assert!(message.starts_with(name) && message.contains("at least 1"), "{name}: {message}");
    }
}

#[test]
fn timeouts_must_be_coherent() {
    let short = NodeSettings { heartbeat_interval_ms: Some(100), election_timeout_ms_min: Some(150), ..valid() };
    assert!(error(short).contains("election_timeout_ms_min (150) must be at least twice heartbeat_interval_ms (100)"));
    let inverted = NodeSettings { election_timeout_ms_min: Some(500), election_timeout_ms_max: Some(400), ..valid() };
    assert!(error(inverted).starts_with("election_timeout_ms_max"));
    let slow_ticks = NodeSettings { tick_interval_ms: Some(500), ..valid() };
    assert!(error(slow_ticks).starts_with("tick_interval_ms"));
    // Only the minimum given: the maximum follows it.
    let node = NodeSettings { election_timeout_ms_min: Some(3_000), ..valid() }.validate().unwrap();
    assert_eq!(node.server.node.raft.election_timeout_ms_max, 6_000);
}

#[test]
fn leases_and_message_sizes_are_checked() {
    let lease = NodeSettings { lease_clock_drift_ppm: Some(1_000), ..valid() }.validate().unwrap();
    assert!(lease.server.node.raft.lease.is_some());
    assert!(
        error(NodeSettings { lease_clock_drift_ppm: Some(400_000), ..valid() }).starts_with("lease_clock_drift_ppm")
    );
    assert!(error(NodeSettings { message_bytes_max: Some(1_000), ..valid() }).starts_with("message_bytes_max"));
    // Larger values raise the command limit with them.
    let big = NodeSettings { value_bytes_max: Some(8 << 20), message_bytes_max: Some(32 << 20), ..valid() };
    let node = big.validate().unwrap();
    assert!(node.server.node.kv_limits.command_bytes_max > 8 << 20);
    assert!(error(NodeSettings { value_bytes_max: Some(32 << 20), ..valid() }).contains("message_bytes_max"));
}

#[test]
fn the_config_file_uses_the_flag_names_and_flags_win() {
    let file = NodeSettings::from_toml(
        r#"
        id = 2
        listen = "127.0.0.1:7002"
        data_dir = "/var/lib/keel"
        initial_cluster = "1=127.0.0.1:7001,2=127.0.0.1:7002"
        heartbeat_interval_ms = 50
        metrics_listen = "127.0.0.1:9100"
        "#,
    )
    .unwrap();
    assert_eq!(file.heartbeat_interval_ms, Some(50));
    let flags = NodeSettings { id: Some(1), listen: Some("127.0.0.1:7001".into()), ..NodeSettings::default() };
    let merged = flags.or(file);
    assert_eq!(merged.id, Some(1));
    assert_eq!(merged.listen.as_deref(), Some("127.0.0.1:7001"));
    assert_eq!(merged.heartbeat_interval_ms, Some(50));
    let node = merged.validate().unwrap();
    assert_eq!(node.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
}

#[test]
fn unknown_or_mistyped_keys_are_refused() {
    let unknown = NodeSettings::from_toml("idd = 1").unwrap_err().0;
    assert!(unknown.contains("idd"), "{unknown}");
    let mistyped = NodeSettings::from_toml("id = \"one\"").unwrap_err().0;
    assert!(mistyped.contains("id"), "{mistyped}");
    let missing = NodeSettings::from_file(Path::new("/nonexistent/keel.toml")).unwrap_err().0;
    assert!(missing.contains("cannot read the config file"), "{missing}");
}

#[test]
fn the_storage_quota_is_optional_and_never_zero() {
    assert_eq!(valid().validate().unwrap().server.node.kv_quota_bytes, 0, "no quota by default");
    let quota = NodeSettings { quota_backend_bytes: Some(2_000_000), ..valid() };
    assert_eq!(quota.validate().unwrap().server.node.kv_quota_bytes, 2_000_000);
    assert!(error(NodeSettings { quota_backend_bytes: Some(0), ..valid() }).contains("quota_backend_bytes"));
}

#[test]
fn worker_threads_default_to_one_per_core_and_stay_in_bounds() {
    assert_eq!(valid().validate().unwrap().worker_threads, None, "tokio's default: one per core");
    let file = NodeSettings::from_toml("worker_threads = 1").unwrap();
    assert_eq!(valid().or(file).validate().unwrap().worker_threads, Some(1));
    for threads in [0, WORKER_THREADS_MAX + 1] {
        let message = error(NodeSettings { worker_threads: Some(threads), ..valid() });
        assert!(message.starts_with("worker_threads must be at least 1 and at most"), "{threads}: {message}");
    }
}

#[test]
fn the_corruption_check_runs_every_five_minutes_unless_changed_or_off() {
    assert_eq!(valid().validate().unwrap().server.node.corrupt_check_interval_ms, 300_000);
    let often = NodeSettings { corrupt_check_interval_ms: Some(1_000), ..valid() };
    assert_eq!(often.validate().unwrap().server.node.corrupt_check_interval_ms, 1_000);
    let off = NodeSettings::from_toml("corrupt_check_interval_ms = 0").unwrap();
    assert_eq!(valid().or(off).validate().unwrap().server.node.corrupt_check_interval_ms, 0);
}

#[test]
fn connections_max_is_set_and_leaves_room_beyond_the_members() {
    let message = error(NodeSettings { connections_max: Some(3), ..valid() });
    assert!(message.contains("connections_max is 3 but the 3 initial members"), "{message}");
    let node = NodeSettings { connections_max: Some(16), ..valid() }.validate().expect("valid");
    assert_eq!(node.server.connections_max, 16);
    let node = valid().validate().expect("valid");
    assert_eq!(node.server.connections_max, keel_runtime::server::CONNECTIONS_MAX_DEFAULT);
}

#[path = "../../../tests/e2e/pki.rs"]
mod pki;

#[test]
fn tls_takes_all_three_files_and_names_what_is_missing_or_wrong() {
    assert!(valid().validate().unwrap().server.tls.is_none(), "plain text by default");
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::create(dir.path());
    let text = format!(
        "cert_file = {:?}\nkey_file = {:?}\ntrusted_ca_file = {:?}\nclient_cert_auth = true",
        pki.node_cert, pki.node_key, pki.ca
    );
    let file = NodeSettings::from_toml(&text).unwrap();
    let tls = valid().or(file.clone()).validate().unwrap().server.tls.expect("TLS from the file");
    assert!(tls.client_cert_auth());
    let open = NodeSettings { client_cert_auth: Some(false), ..valid() }.or(file.clone());
    assert!(!open.validate().unwrap().server.tls.unwrap().client_cert_auth(), "a flag overrides the file");

    let files = || NodeSettings { client_cert_auth: None, ..valid().or(file.clone()) };
    let cases = [
        (NodeSettings { key_file: None, ..files() }, "key_file is missing"),
        (NodeSettings { cert_file: None, ..files() }, "cert_file is missing"),
        (NodeSettings { trusted_ca_file: None, ..files() }, "trusted_ca_file is missing"),
        (NodeSettings { client_cert_auth: Some(true), ..valid() }, "client_cert_auth needs TLS"),
        (NodeSettings { key_file: Some(pki.node_cert.clone()), ..files() }, "holds no usable private key"),
        (NodeSettings { trusted_ca_file: Some(pki.node_key.clone()), ..files() }, "holds no PEM certificate"),
        (NodeSettings { cert_file: Some("/nonexistent/node.pem".into()), ..files() }, "/nonexistent/node.pem"),
        (NodeSettings { key_file: Some(pki.client_key.clone()), ..files() }, "cannot be used together"),
    ];
    for (settings, expected) in cases {
        let message = error(settings);
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    }
}
