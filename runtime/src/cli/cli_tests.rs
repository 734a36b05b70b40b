//! Argument parsing: every command's shape, defaults, and refusals (clap exits with 2 on those).

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::*;

fn parse(args: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("keel").chain(args.iter().copied())).map(|cli| cli.command)
}

fn refused(args: &[&str]) -> ErrorKind {
    parse(args).unwrap_err().kind()
}

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn client_commands_default_to_the_dev_cluster() {
    let Command::Put { key, value, ttl, client } = parse(&["put", "/hello", "world"]).unwrap() else { panic!() };
    assert_eq!((key.as_str(), value.as_str(), ttl), ("/hello", "world", None));
    assert_eq!(client.endpoints, ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
    assert_eq!(client.format, Format::Simple);
    assert_eq!(client.timeout, 15);
}

#[test]
fn endpoints_format_and_ttl_are_parsed() {
    let command = parse(&["put", "/k", "v", "--ttl", "30", "--endpoints", "a:1,b:2", "-w", "json"]).unwrap();
    let Command::Put { ttl, client, .. } = command else { panic!() };
    assert_eq!(ttl, Some(30));
    assert_eq!(client.endpoints, ["a:1", "b:2"]);
    assert_eq!(client.format, Format::Json);
    assert_eq!(refused(&["put", "/k", "v", "--ttl", "0"]), ErrorKind::ValueValidation);
    assert_eq!(refused(&["put", "/k", "v", "-w", "yaml"]), ErrorKind::InvalidValue);
}

#[test]
fn get_takes_keys_and_a_consistency() {
    let Command::Get { keys, consistency, .. } = parse(&["get", "/a", "/b", "--consistency", "eventual"]).unwrap()
    else {
        panic!()
    };
    assert_eq!(keys, ["/a", "/b"]);
    assert_eq!(consistency, ConsistencyArg::Eventual);
    let Command::Get { consistency, .. } = parse(&["get", "/a"]).unwrap() else { panic!() };
    assert_eq!(consistency, ConsistencyArg::Linearizable);
    assert_eq!(refused(&["get"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn cas_needs_exactly_one_expectation() {
    let Command::Cas(cas) = parse(&["cas", "/k", "new", "--expected", "old"]).unwrap() else { panic!() };
    assert_eq!(
        (cas.key.as_str(), cas.new.as_str(), cas.expected.as_deref(), cas.absent),
        ("/k", "new", Some("old"), false)
    );
    let Command::Cas(cas) = parse(&["cas", "/k", "new", "--absent"]).unwrap() else { panic!() };
    assert!(cas.absent && cas.expected.is_none());
    assert_eq!(refused(&["cas", "/k", "new"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(refused(&["cas", "/k", "new", "--absent", "--expected", "x"]), ErrorKind::ArgumentConflict);
}

#[test]
fn watch_and_membership_commands_parse() {
    let Command::Watch { key, prefix, prev_kv, .. } = parse(&["watch", "/config/", "--prefix", "--prev-kv"]).unwrap()
    else {
        panic!()
    };
    assert_eq!((key.as_str(), prefix, prev_kv), ("/config/", true, true));
    let command = parse(&["member", "add", "4", "127.0.0.1:7004", "--read-only"]).unwrap();
    let Command::Member { command: MemberCommand::Add { id, address, read_only, .. } } = command else { panic!() };
    assert_eq!((id, address.as_str(), read_only), (4, "127.0.0.1:7004", true));
    let Command::Member { command: MemberCommand::Promote { ids, .. } } =
        parse(&["member", "promote", "4", "5"]).unwrap()
    else {
        panic!()
    };
    assert_eq!(ids, [4, 5]);
    assert_eq!(refused(&["member", "remove"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(refused(&["member", "remove", "x"]), ErrorKind::ValueValidation);
    assert!(matches!(parse(&["transfer-leader", "2"]).unwrap(), Command::TransferLeader { id: 2, .. }));
    assert!(matches!(parse(&["status", "-w", "json"]).unwrap(), Command::Status { .. }));
    assert!(matches!(parse(&["members"]).unwrap(), Command::Members { .. }));
    assert!(matches!(parse(&["del", "/k"]).unwrap(), Command::Del { .. }));
    assert!(matches!(parse(&["scan", "/"]).unwrap(), Command::Scan { .. }));
}

#[test]
fn node_flags_fill_the_settings() {
    let command = parse(&[
        "node",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:7001",
        "--data-dir",
        "/var/lib/keel",
        "--initial-cluster",
        "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
        "--metrics-listen",
        "127.0.0.1:9100",
        "--heartbeat-interval-ms",
        "50",
        "--worker-threads",
        "1",
        "--config",
        "keel.toml",
    ])
    .unwrap();
    let Command::Node(args) = command else { panic!() };
    assert_eq!(args.config.as_deref(), Some(std::path::Path::new("keel.toml")));
    assert_eq!(args.settings.id, Some(1));
    assert_eq!(args.settings.heartbeat_interval_ms, Some(50));
    assert_eq!(args.settings.worker_threads, Some(1));
    assert_eq!(args.settings.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
    assert_eq!(refused(&["node", "--id", "one"]), ErrorKind::ValueValidation);
}

#[test]
fn tls_flags_parse_as_etcd_spells_them() {
    let node = ["node", "--cert-file", "n.pem", "--key-file", "k.pem", "--trusted-ca-file", "ca.pem"];
    let Command::Node(args) = parse(&[&node[..], &["--client-cert-auth"]].concat()).unwrap() else { panic!() };
    assert_eq!(args.settings.client_cert_auth, Some(true), "the bare flag turns it on");
    assert_eq!(args.settings.trusted_ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
    let Command::Node(args) = parse(&[&node[..], &["--client-cert-auth=false"]].concat()).unwrap() else { panic!() };
    assert_eq!(args.settings.client_cert_auth, Some(false));
    let Command::Get { client, .. } =
        parse(&["get", "/k", "--cacert", "ca.pem", "--cert", "c.pem", "--key", "k.pem"]).unwrap()
    else {
        panic!()
    };
    assert_eq!(client.cacert.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert_eq!(refused(&["get", "/k", "--cacert", "ca.pem", "--cert", "c.pem"]), ErrorKind::MissingRequiredArgument);
    assert_eq!(refused(&["get", "/k", "--cert", "c.pem", "--key", "k.pem"]), ErrorKind::MissingRequiredArgument);
}

#[test]
fn dev_has_defaults_and_bounds() {
    let Command::Dev(args) = parse(&["dev"]).unwrap() else { panic!() };
    assert_eq!((args.dir, args.nodes, args.base_port), (None, 3, 7001));
    let Command::Dev(args) = parse(&["dev", "--dir", "/tmp/x", "--nodes", "5", "--base-port", "9001"]).unwrap() else {
        panic!()
    };
    assert_eq!((args.nodes, args.base_port), (5, 9001));
    assert_eq!(refused(&["dev", "--nodes", "0"]), ErrorKind::ValueValidation);
}

#[test]
fn unknown_commands_are_usage_errors() {
    assert_eq!(refused(&["frobnicate"]), ErrorKind::InvalidSubcommand);
    // clap exits with 2 for usage errors.
    assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), i32::from(EXIT_USAGE));
}

#[test]
fn user_gives_credentials_with_the_password_inline() {
    let credentials = |args: &[&str]| {
        let Command::Put { client, .. } = parse(args).unwrap() else { panic!() };
        client.credentials()
    };
    assert_eq!(credentials(&["put", "/a", "1"]), Ok(None));
    let found = credentials(&["put", "/a", "1", "--user", "alice:pass:word"]).unwrap().unwrap();
    assert_eq!((found.user.as_str(), found.password.as_str()), ("alice", "pass:word"));
    assert!(credentials(&["put", "/a", "1", "--user", ":pw"]).unwrap_err().contains("user name"));
}
