//! Debian's `etcdctl` 3.4 (`apt-get install etcd-client`) against a 3-node Keel cluster: the
//! etcd v3 API as an unmodified etcd client sees it, and its sharing of the store with the
//! native API.
//!
//! These tests are `#[ignore]`d because they need `/usr/bin/etcdctl`; CI installs it and runs
//! `cargo test -p keel-runtime --test e2e -- --ignored etcdctl`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, WAIT};

/// The etcd client under test.
const ETCDCTL: &str = "etcdctl";

/// Runs `etcdctl` (API v3) against `endpoints` with `args`, feeding `stdin`.
fn etcdctl(endpoints: &[String], args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=3s", "--command-timeout=15s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (apt-get install etcd-client)");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    child.wait_with_output().expect("etcdctl finishes")
}

/// Runs `etcdctl` and returns its standard output; panics with both outputs if it fails.
fn ok(endpoints: &[String], args: &[&str]) -> String {
    ok_with_input(endpoints, args, "")
}

fn ok_with_input(endpoints: &[String], args: &[&str], stdin: &str) -> String {
    let output = etcdctl(endpoints, args, stdin);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `etcdctl` expecting a failure; returns its standard error.
fn fails(endpoints: &[String], args: &[&str]) -> String {
    let output = etcdctl(endpoints, args, "");
    assert!(!output.status.success(), "etcdctl {args:?} should fail: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// etcdctl's JSON shows keys and values in base64.
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn cluster() -> (Cluster, Vec<String>) {
    let cluster = Cluster::start(3, &[]);
    cluster.leader(&[1, 2, 3]).await;
    let endpoints = cluster.endpoints();
    (cluster, endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_put_and_get_with_options() {
    let (_cluster, all) = cluster().await;
    // Every node takes writes: followers forward them to the leader.
    for (i, endpoint) in all.iter().enumerate() {
        assert_eq!(ok(std::slice::from_ref(endpoint), &["put", &format!("/app/{i}"), &format!("v{i}")]), "OK\n");
    }
    ok(&all, &["put", "/other", "x"]);
    ok(&all, &["put", "/app/0", "v0b"]);
    assert_eq!(ok(&all, &["get", "--prefix", "/app/"]), "/app/0\nv0b\n/app/1\nv1\n/app/2\nv2\n");
    // The first write is revision 2: an empty store is at revision 1, as in etcd.
    assert_eq!(ok(&all, &["get", "/app/0", "--rev=2"]), "/app/0\nv0\n");
    assert_eq!(ok(&all, &["get", "--prefix", "/app/", "--keys-only"]), "/app/0\n\n/app/1\n\n/app/2\n\n");
    let limited = json(&ok(&all, &["get", "--prefix", "/app/", "--limit=2", "-w", "json"]));
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(2));
    assert_eq!((limited["more"].as_bool(), limited["count"].as_i64()), (Some(true), Some(3)));
    assert_eq!(limited["header"]["revision"].as_i64(), Some(6));
    assert_eq!(limited["header"]["cluster_id"].as_u64(), Some(keel_runtime::etcd::CLUSTER_ID));
    let one = json(&ok(&all, &["get", "/app/0", "-w", "json"]));
    let kv = &one["kvs"][0];
    assert_eq!(kv["key"].as_str(), Some(base64("/app/0").as_str()));
    assert_eq!(
        (kv["create_revision"].as_i64(), kv["mod_revision"].as_i64(), kv["version"].as_i64()),
        (Some(2), Some(6), Some(2))
    );
    assert_eq!(ok(&all, &["get", "", "--from-key", "--keys-only"]).lines().filter(|l| !l.is_empty()).count(), 4);
    let descending = ok(&all, &["get", "--prefix", "/app/", "--keys-only", "--order=DESCEND"]);
    assert_eq!(descending, "/app/2\n\n/app/1\n\n/app/0\n\n");
    assert!(fails(&all, &["get", "/app/0", "--rev=99"]).contains("required revision is a future revision"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_del_prefix_and_txn() {
    let (_cluster, all) = cluster().await;
    for key in ["/d/a", "/d/b", "/keep"] {
        ok(&all, &["put", key, "1"]);
    }
    assert_eq!(ok(&all, &["del", "--prefix", "/d/", "--prev-kv"]), "2\n/d/a\n1\n/d/b\n1\n");
    assert_eq!(ok(&all, &["get", "--prefix", "/d/"]), "");
    // Compare on the value; success puts and reads, at one revision.
    let txn = "value(\"/keep\") = \"1\"\n\nput /keep 2\nput /t 3\nget /keep\n\nput /keep failed\n\n";
    assert_eq!(ok_with_input(&all, &["txn"], txn), "SUCCESS\n\nOK\n\nOK\n\n/keep\n2\n");
    let after = json(&ok(&all, &["get", "/t", "-w", "json"]));
    assert_eq!(after["kvs"][0]["mod_revision"].as_i64(), Some(6), "one revision for the whole transaction");
    // The same compare fails now: the failure branch runs.
    assert_eq!(ok_with_input(&all, &["txn"], txn), "FAILURE\n\nOK\n");
    assert_eq!(ok(&all, &["get", "/keep"]), "/keep\nfailed\n");
    // Compares on versions and revisions.
    let versions = "version(\"/t\") = \"1\"\nmod(\"/t\") < \"7\"\ncreate(\"/missing\") = \"0\"\n\nput /v yes\n\n\n";
    assert_eq!(ok_with_input(&all, &["txn"], versions), "SUCCESS\n\nOK\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_watch_replays_history_then_follows() {
    let (_cluster, all) = cluster().await;
    ok(&all, &["put", "/w/a", "1"]); // 2 (an empty store is at revision 1, as in etcd)
    ok(&all, &["put", "/w/a", "2"]); // 3
    ok(&all, &["put", "/x", "unwatched"]); // 4
    let mut watch = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", all[1]))
        .args(["watch", "--prefix", "/w/", "--rev=2", "--prev-kv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch runs");
    let stdout = watch.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            lines.push(line.unwrap_or_default());
            if lines.len() == 16 {
                break;
            }
        }
        lines
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(&all, &["del", "/w/a"]); // 5
    ok(&all, &["put", "/w/b", "3"]); // 6
    let deadline = tokio::time::Instant::now() + WAIT;
    while !reader.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let lines = reader.join().expect("the reader finishes");
    // etcdctl prints the event type, then the previous key and value (with --prev-kv), then the key and value.
    let expected = [
        "PUT", "/w/a", "1", //
        "PUT", "/w/a", "1", "/w/a", "2", //
        "DELETE", "/w/a", "2", "/w/a", "", //
        "PUT", "/w/b", "3",
    ];
    assert_eq!(lines, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_members_status_health_and_move_leader() {
    let (cluster, all) = cluster().await;
    let members = ok(&all, &["member", "list"]);
    for (id, address) in [(1, &all[0]), (2, &all[1]), (3, &all[2])] {
        let line = format!("{id:x}, started, keel-{id}, http://{address}, http://{address}, false");
        assert!(members.contains(&line), "{line} in {members}");
    }
    ok(&all, &["put", "/s", "1"]);
    let leader = cluster.leader(&[1, 2, 3]).await;
    cluster.converged(leader, &[1, 2, 3]).await;
    let status = ok(&all, &["endpoint", "status", "-w", "json"]);
    let statuses = json(&status);
    for entry in statuses.as_array().expect("a list") {
        assert_eq!(entry["Status"]["version"].as_str(), Some("3.4.0"));
        assert_eq!(entry["Status"]["leader"].as_u64(), Some(u64::from(leader)));
        assert!(entry["Status"]["dbSize"].as_i64().is_some_and(|size| size > 0), "{entry}");
    }
    // etcdctl 3.4 prints the health of each endpoint on standard error.
    let output = etcdctl(&all, &["endpoint", "health"], "");
    let health = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{health}");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let target = if leader == 1 { 2 } else { 1 };
    let leader_endpoint = &all[leader as usize - 1];
    let moved = ok(std::slice::from_ref(leader_endpoint), &["move-leader", &format!("{target:x}")]);
    assert!(moved.contains("Leadership transferred"), "{moved}");
    assert_eq!(cluster.leader(&[1, 2, 3]).await, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_compaction_then_reads_below_it_fail() {
    let (_cluster, all) = cluster().await;
    for value in ["1", "2", "3", "4"] {
        ok(&all, &["put", "/c", value]); // revisions 2 to 5
    }
    assert_eq!(ok(&all, &["compaction", "4"]), "compacted revision 4\n");
    assert!(fails(&all, &["get", "/c", "--rev=3"]).contains("etcdserver: mvcc: required revision has been compacted"));
    assert_eq!(ok(&all, &["get", "/c", "--rev=4"]), "/c\n3\n");
    assert!(fails(&all, &["compaction", "3"]).contains("required revision has been compacted"));
    let output = etcdctl(&all, &["watch", "/c", "--rev=3"], "");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("required revision has been compacted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_and_the_native_api_share_keys_and_revisions() {
    let (cluster, all) = cluster().await;
    let client = cluster.client();
    client.put("/shared/native", "from native", None).await.expect("native put");
    ok(&all, &["put", "/shared/etcd", "from etcd"]);
    let scan = client.scan("/shared/").await.expect("native scan");
    assert_eq!(scan.revision, 3, "two writes after the empty store's revision 1");
    let by_etcd = json(&ok(&all, &["get", "/shared/native", "-w", "json"]));
    assert_eq!(by_etcd["kvs"][0]["mod_revision"].as_i64(), Some(2), "the native write's revision");
    assert_eq!(by_etcd["kvs"][0]["value"].as_str(), Some(base64("from native").as_str()));
    let etcd_value = client.get_one("/shared/etcd").await.expect("native get");
    assert_eq!(etcd_value.as_deref(), Some(&b"from etcd"[..]));
}

/// The lease id in `etcdctl lease grant`'s answer ("lease 000000000000000a granted with ...").
fn granted_id(answer: &str) -> String {
    answer.split_whitespace().nth(1).unwrap_or_else(|| panic!("no lease id in {answer}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_leases_keep_keys_alive_then_expire_or_revoke_them() {
    let (cluster, all) = cluster().await;
    // Keep-alives and revokes go to a follower, which forwards them to the leader.
    let leader = cluster.leader(&[1, 2, 3]).await;
    let follower = vec![all[if leader == 1 { 1 } else { 0 }].clone()];
    let id = granted_id(&ok(&all, &["lease", "grant", "3"]));
    ok(&all, &["put", "/l/a", "1", &format!("--lease={id}")]);
    ok(&all, &["put", "/l/b", "2", &format!("--lease={id}")]);
    let ttl = ok(&all, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("granted with TTL(3s)") && ttl.contains("attached keys([/l/a /l/b])"), "{ttl}");
    assert!(ok(&all, &["lease", "list"]).contains(&id));
    let leased = json(&ok(&all, &["get", "/l/a", "-w", "json"]));
    assert_eq!(leased["kvs"][0]["lease"].as_i64(), i64::from_str_radix(&id, 16).ok());
    // Kept alive through a follower for longer than its TTL, the keys stay.
    for _ in 0..5 {
        let kept = ok(&follower, &["lease", "keep-alive", "--once", &id]);
        assert!(kept.contains("keepalived with TTL(3)"), "{kept}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(ok(&all, &["get", "--prefix", "/l/", "--keys-only"]), "/l/a\n\n/l/b\n\n");
    // Left alone, the lease expires with its keys (TTL, plus the clock-offset bound and the
    // expiry interval).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok(&all, &["get", "--prefix", "/l/", "--keys-only"]).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the lease's keys never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok(&all, &["lease", "timetolive", &id]).contains("already expired"));
    // Revoked, a lease's keys go at once.
    let other = granted_id(&ok(&all, &["lease", "grant", "600"]));
    ok(&all, &["put", "/l/c", "3", &format!("--lease={other}")]);
    assert!(ok(&follower, &["lease", "revoke", &other]).contains("revoked"));
    assert_eq!(ok(&all, &["get", "/l/c"]), "");
    assert!(fails(&all, &["put", "/l/d", "v", "--lease=1234"]).contains("requested lease not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_hashkv_snapshot_defrag_and_alarms() {
    let (cluster, all) = cluster().await;
    ok(&all, &["put", "/h/a", "1"]);
    ok(&all, &["put", "/h/b", "2"]);
    let leader = cluster.leader(&[1, 2, 3]).await;
    cluster.converged(leader, &[1, 2, 3]).await;
    let hashes = json(&ok(&all, &["endpoint", "hashkv", "-w", "json"]));
    let values: Vec<u64> =
        hashes.as_array().expect("a list").iter().filter_map(|e| e["HashKV"]["hash"].as_u64()).collect();
    assert_eq!(values.len(), 3, "{hashes}");
    assert!(values.iter().all(|hash| *hash == values[0]), "every member has the same history: {hashes}");
    let at_one = json(&ok(&all, &["endpoint", "hashkv", "--rev=1", "-w", "json"]));
    assert_ne!(at_one[0]["HashKV"]["hash"].as_u64(), Some(values[0]), "another revision, another hash");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("snapshot.db");
    let path = path.to_str().expect("a UTF-8 path");
    let output = etcdctl(std::slice::from_ref(&all[1]), &["snapshot", "save", path], "");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = std::fs::read(path).expect("the snapshot file");
    assert!(saved.starts_with(b"KEELKVSN") && saved.len() % 512 == 32, "{} bytes", saved.len());
    assert_eq!(ok(&all, &["defrag"]).matches("Finished defragmenting").count(), 3);
    assert_eq!(ok(&all, &["alarm", "list"]), "");
}

/// Raises a NOSPACE alarm for member 1 through `endpoint` (etcdctl cannot raise alarms).
async fn raise_nospace(endpoint: &str) {
    use keel::proto::etcdserverpb::alarm_request::AlarmAction;
    use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use keel::proto::etcdserverpb::{AlarmRequest, AlarmType};
    let mut maintenance = MaintenanceClient::connect(format!("http://{endpoint}")).await.expect("connected");
    let request = AlarmRequest { action: AlarmAction::Activate as i32, member_id: 1, alarm: AlarmType::Nospace as i32 };
    maintenance.alarm(request).await.expect("the alarm is raised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_alarms_refuse_growth_survive_a_leader_kill_and_restart_then_disarm() {
    let (mut cluster, all) = cluster().await;
    ok(&all, &["put", "/q/a", "1"]);
    ok(&all, &["put", "/q/b", "2"]);
    let leader = cluster.leader(&[1, 2, 3]).await;
    let follower = if leader == 1 { 2 } else { 1 };
    raise_nospace(&all[follower as usize - 1]).await;
    let listed = "memberID:1 alarm:NOSPACE \n";
    assert_eq!(ok(&all, &["alarm", "list"]), listed);
    // `endpoint status` lists raised alarms under ERRORS, as etcd does.
    for entry in json(&ok(&all, &["endpoint", "status", "-w", "json"])).as_array().expect("a list") {
        assert_eq!(entry["Status"]["errors"], serde_json::json!(["memberID:1 alarm:NOSPACE "]), "{entry}");
    }
    assert!(fails(&all, &["put", "/q/c", "3"]).contains("etcdserver: mvcc: database space exceeded"));
    assert!(fails(&all, &["lease", "grant", "60"]).contains("database space exceeded"));
    assert_eq!(ok(&all, &["get", "/q/a"]), "/q/a\n1\n", "reads still work");
    assert_eq!(ok(&all, &["del", "/q/a"]), "1\n", "deletes still work");
    // The alarm is replicated state: a new leader and a restarted member still have it.
    cluster.nodes.get_mut(&leader).expect("the leader's process").kill_9();
    let survivors: Vec<u32> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    cluster.leader(&survivors).await;
    let alive: Vec<String> = survivors.iter().map(|id| cluster.nodes[id].address.clone()).collect();
    assert_eq!(ok(&alive, &["alarm", "list"]), listed);
    assert!(fails(&alive, &["put", "/q/c", "3"]).contains("database space exceeded"));
    cluster.nodes.get_mut(&leader).expect("the old leader's process").restart();
    let new_leader = cluster.leader(&[1, 2, 3]).await;
    cluster.converged(new_leader, &[1, 2, 3]).await;
    let restarted = vec![cluster.nodes[&leader].address.clone()];
    assert_eq!(ok(&restarted, &["alarm", "list"]), listed);
    assert_eq!(ok(&restarted, &["alarm", "disarm"]), listed);
    assert_eq!(ok(&all, &["alarm", "list"]), "");
    let status = json(&ok(&restarted, &["endpoint", "status", "-w", "json"]));
    assert!(status[0]["Status"].get("errors").is_none_or(|errors| errors == &serde_json::json!([])), "{status}");
    assert_eq!(ok(&all, &["put", "/q/c", "3"]), "OK\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_member_update_moves_a_member_to_a_new_address() {
    let (mut cluster, all) = cluster().await;
    let leader = cluster.leader(&[1, 2, 3]).await;
    let moved = if leader == 3 { 2 } else { 3 };
    let address = crate::cluster::free_address();
    let peer_url = format!("--peer-urls=http://{address}");
    let updated = ok(&all, &["member", "update", &format!("{moved:x}"), &peer_url]);
    assert!(updated.contains(&format!("Member {moved:16x} updated")), "{updated}");
    ok(&all, &["put", "/u", "written while the member moves"]);
    cluster.restart_at(moved, address.clone());
    // etcdctl 3.4 asks for a node's own view; the leader applied the change before answering.
    let line = format!("{moved:x}, started, keel-{moved}, http://{address}, http://{address}, false");
    let members = ok(std::slice::from_ref(&all[leader as usize - 1]), &["member", "list"]);
    assert!(members.contains(&line), "{line} in {members}");
    // A linearizable list from the restarted member, which may not have the change in its log
    // yet, waits for it: it may fail while the member finds the leader, never answer stale.
    let url = format!("http://{address}");
    let listed =
        cluster.eventually("a linearizable member list from the moved member", || linearizable_members(&address)).await;
    let moved_member = listed.iter().find(|member| member.id == u64::from(moved)).expect("the moved member listed");
    assert_eq!(moved_member.peer_ur_ls, vec![url]);
    // The leader replicates to the member at its new address; then every node's view has it.
    cluster.converged(leader, &[1, 2, 3]).await;
    let members = ok(&cluster.endpoints(), &["member", "list"]);
    assert!(members.contains(&line), "{line} in {members}");
    let serializable = ok(std::slice::from_ref(&address), &["get", "/u", "--consistency=s"]);
    assert_eq!(serializable, "/u\nwritten while the member moves\n");
    let endpoints = cluster.endpoints();
    assert!(fails(&endpoints, &["member", "update", "63", &peer_url]).contains("etcdserver: member not found"));
    let taken = format!("--peer-urls=http://{}", all[leader as usize - 1]);
    let refused = fails(&endpoints, &["member", "update", &format!("{moved:x}"), &taken]);
    assert!(refused.contains("etcdserver: Peer URLs already exists"), "{refused}");
}

/// The members listed by `endpoint` with `linearizable` set, or `None` if it fails.
async fn linearizable_members(endpoint: &str) -> Option<Vec<keel::proto::etcdserverpb::Member>> {
    use keel::proto::etcdserverpb::cluster_client::ClusterClient;
    use keel::proto::etcdserverpb::MemberListRequest;
    let mut client = ClusterClient::connect(format!("http://{endpoint}")).await.ok()?;
    let response = client.member_list(MemberListRequest { linearizable: true }).await.ok()?;
    Some(response.into_inner().members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_adds_a_learner_promotes_it_and_removes_it() {
    let (mut cluster, all) = cluster().await;
    ok(&all, &["put", "/m", "1"]);
    assert!(fails(&all, &["member", "add", "keel-4", "--peer-urls=http://127.0.0.1:1"]).contains("learner"));
    let address = crate::cluster::free_address();
    let added = ok(&all, &["member", "add", "keel-4", "--learner", &format!("--peer-urls=http://{address}")]);
    assert!(added.contains("Member                4 added"), "{added}");
    cluster.add_process(4, address.clone());
    let promoted = cluster
        .eventually("the learner promoted once caught up", || async {
            let output = etcdctl(&all, &["member", "promote", "4"], "");
            let stderr = String::from_utf8_lossy(&output.stderr).to_string();
            assert!(output.status.success() || stderr.contains("in sync with leader"), "{stderr}");
            output.status.success().then_some(())
        })
        .await;
    assert_eq!(promoted, ());
    let members = ok(&all, &["member", "list"]);
    assert!(members.contains(&format!("4, started, keel-4, http://{address}, http://{address}, false")), "{members}");
    assert_eq!(ok(std::slice::from_ref(&address), &["get", "/m"]), "/m\n1\n", "the new member serves the data");
    assert!(ok(&all, &["member", "remove", "4"]).contains("removed"));
    assert!(!ok(&all, &["member", "list"]).contains("keel-4"));
    assert!(fails(&all, &["member", "remove", "4"]).contains("member not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_leases_get_their_full_ttl_again_from_a_new_leader() {
    let (mut cluster, all) = cluster().await;
    let old_leader = cluster.leader(&[1, 2, 3]).await;
    let started = tokio::time::Instant::now();
    let id = granted_id(&ok(&all, &["lease", "grant", "6"]));
    ok(&all, &["put", "/r", "1", &format!("--lease={id}")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.nodes.get_mut(&old_leader).expect("the leader's process").kill_9();
    let survivors: Vec<u32> = [1, 2, 3].into_iter().filter(|id| *id != old_leader).collect();
    cluster.leader(&survivors).await;
    let alive: Vec<String> = survivors.iter().map(|id| cluster.nodes[id].address.clone()).collect();
    // The new leader restarted the lease's 6 s after the old leader's death (at least 3 s after
    // the grant), so the key lives at least until 9 s after the grant; without the refresh it
    // would be due 6 s after the grant.
    let check_at = started + Duration::from_millis(7_500);
    tokio::time::sleep_until(check_at).await;
    if tokio::time::Instant::now() < started + Duration::from_millis(8_500) {
        assert_eq!(ok(&alive, &["get", "/r"]), "/r\n1\n", "the lease was refreshed by the new leader");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok(&alive, &["get", "/r"]).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the lease never expired under the new leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A long-running `etcdctl` (lock holder, election candidate) whose standard output lines arrive
/// on the returned channel as they are printed.
fn etcdctl_running(endpoint: &str, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl runs");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, received)
}

/// Sends SIGINT, on which etcdctl's lock and elect give up what they hold, and reaps the child.
fn interrupt(mut child: std::process::Child) {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let _ = child.wait();
}

/// etcd's concurrency recipes wait for keys created at or below "my creation revision - 1" and
/// read 0 as "no bound": on a fresh cluster whose first write were revision 1 the first
/// candidate would wait for itself forever. An empty store is at revision 1, as in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_elect_on_a_fresh_cluster_elects_then_hands_over() {
    let (_cluster, all) = cluster().await;
    let (first, first_lines) = etcdctl_running(&all[0], &["elect", "/election", "p1"]);
    let timeout = WAIT;
    let elected = first_lines.recv_timeout(timeout).expect("the first candidate is elected at once");
    assert!(elected.starts_with("/election/"), "{elected}");
    assert_eq!(first_lines.recv_timeout(timeout).as_deref(), Ok("p1"));
    let (second, second_lines) = etcdctl_running(&all[1], &["elect", "/election", "p2"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok(&all, &["get", "--prefix", "/election/", "--keys-only"]).lines().filter(|l| !l.is_empty()).count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the second candidate never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second_lines.try_recv().is_err(), "the second candidate waits while the first leads");
    interrupt(first);
    let _key = second_lines.recv_timeout(timeout).expect("the second candidate is elected once the first resigns");
    assert_eq!(second_lines.recv_timeout(timeout).as_deref(), Ok("p2"));
    interrupt(second);
}

/// Three `etcdctl lock` holders, through three members, on a fresh cluster: each runs its command
/// alone (their start and end lines never interleave), and each gets the lock in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_lock_on_a_fresh_cluster_runs_holders_one_at_a_time() {
    let (_cluster, all) = cluster().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = dir.path().join("holders.log");
    let log = log.to_str().expect("a UTF-8 path");
    let mut holders = Vec::new();
    for (i, endpoint) in all.iter().enumerate() {
        let script = format!("echo start {i} >> {log}; sleep 0.3; echo end {i} >> {log}");
        let (child, _lines) = etcdctl_running(endpoint, &["lock", "/locks/one", "--", "sh", "-c", &script]);
        holders.push(child);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for mut holder in holders {
        loop {
            if let Some(status) = holder.try_wait().expect("the holder's status") {
                assert!(status.success(), "etcdctl lock failed: {status}");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = holder.kill();
                panic!("a lock holder never got the lock");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let text = std::fs::read_to_string(log).expect("the holders' log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let mut holders_seen: Vec<&str> = Vec::new();
    for pair in lines.chunks(2) {
        let holder = pair[0].strip_prefix("start ").expect("a start line");
        assert_eq!(pair[1], format!("end {holder}"), "another holder ran inside the lock: {text}");
        holders_seen.push(holder);
    }
    holders_seen.sort_unstable();
    assert_eq!(holders_seen, ["0", "1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl (apt-get install etcd-client)"]
async fn etcdctl_users_roles_and_permissions_gate_requests_once_auth_is_enabled() {
    let cluster = Cluster::start(3, &["--auth-password-iterations=1000"]);
    cluster.leader(&[1, 2, 3]).await;
    let all = cluster.endpoints();
    assert!(fails(&all, &["auth", "enable"]).contains("root user does not exist"));
    ok(&all, &["user", "add", "root:rootpw"]);
    ok(&all, &["user", "grant-role", "root", "root"]);
    ok(&all, &["role", "add", "app"]);
    ok(&all, &["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"]);
    ok(&all, &["role", "grant-permission", "app", "read", "/shared"]);
    ok(&all, &["user", "add", "alice:alicepw"]);
    ok(&all, &["user", "grant-role", "alice", "app"]);
    assert_eq!(ok(&all, &["auth", "enable"]), "Authentication Enabled\n");
    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:alicepw"];
    let with = |user: &[&'static str; 2], args: &[&'static str]| -> Vec<&'static str> {
        user.iter().chain(args).copied().collect()
    };
    // Every member takes alice's writes inside her prefix, followers forwarding them.
    for (i, endpoint) in all.iter().enumerate() {
        let key = ["/app/a", "/app/b", "/app/c"][i];
        assert_eq!(ok(std::slice::from_ref(endpoint), &with(&alice, &["put", key, "1"])), "OK\n");
    }
    assert!(fails(&all, &with(&alice, &["put", "/etc/a", "1"])).contains("permission denied"));
    assert!(fails(&all, &with(&alice, &["put", "/shared", "1"])).contains("permission denied"));
    assert!(fails(&all, &["put", "/app/a", "2"]).contains("user name is empty"));
    assert!(fails(&all, &["--user", "alice:wrong", "get", "/app/a"]).contains("authentication failed"));
    ok(&all, &with(&root, &["put", "/shared", "s"]));
    assert_eq!(ok(&all, &with(&alice, &["get", "/shared", "--print-value-only"])), "s\n");
    assert_eq!(ok(&all, &with(&alice, &["get", "--prefix", "/app/", "--keys-only"])), "/app/a\n\n/app/b\n\n/app/c\n\n");
    assert!(fails(&all, &with(&alice, &["get", "--prefix", "/"])).contains("permission denied"));
    assert!(fails(&all, &with(&alice, &["user", "list"])).contains("permission denied"));
    assert_eq!(ok(&all, &with(&root, &["user", "list"])), "alice\nroot\n");
    let role = ok(&all, &with(&root, &["role", "get", "app"]));
    assert!(role.contains("[/app/, /app0) (prefix /app/)") && role.contains("/shared"), "{role}");
    assert!(ok(&all, &with(&root, &["user", "get", "alice"])).contains("Roles: app"));
    // Revoked: the same user can no longer write there, through any member.
    ok(&all, &with(&root, &["role", "revoke-permission", "app", "/app/", "--prefix"]));
    assert!(fails(&all, &with(&alice, &["put", "/app/a", "2"])).contains("permission denied"));
    ok_with_input(&all, &with(&root, &["user", "passwd", "alice", "--interactive=false"]), "newpw\n");
    assert!(fails(&all, &with(&alice, &["get", "/shared"])).contains("authentication failed"));
    assert_eq!(ok(&all, &["--user", "alice:newpw", "get", "/shared", "--print-value-only"]), "s\n");
    ok(&all, &with(&root, &["auth", "disable"]));
    assert_eq!(ok(&all, &["put", "/etc/a", "open"]), "OK\n");
}
