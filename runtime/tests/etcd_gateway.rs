//! etcd's HTTP gateway (`runtime/src/etcd/gateway.rs`) over plain HTTP/1.1 (plain build only):
//! the JSON requests and answers etcd 3.4's gateway reads and writes (proto field names, int64
//! as strings, bytes in base64), its error bodies and HTTP statuses, the `/v3beta/` alias, and
//! the streams (watch, lease keep-alive) as lines of `{"result": ...}`; all over the same store
//! as the gRPC API.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::time::Duration;

use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::{PutRequest, RangeRequest};
use keel_runtime::embedded::EmbeddedNode;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::ServerConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tonic::transport::Channel;

/// A single in-memory node that leads, and its address.
async fn node() -> (EmbeddedNode, String) {
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut node = NodeConfig::new(1, BTreeMap::from([(1, address.clone())]));
    node.raft.election_timeout_ms_min = 200;
    node.raft.election_timeout_ms_max = 400;
    node.raft.heartbeat_interval_ms = 50;
    let node = EmbeddedNode::start(ServerConfig::new(node, address.parse().unwrap())).await.expect("the node starts");
    for _ in 0..200 {
        if post(&address, "/v3/kv/put", &json!({"key": b64("/ready")})).await.0 == 200 {
            return (node, address);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the node never took a write");
}

fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// `POST path` with `body` (JSON text) over HTTP/1.1: the status and the parsed answer.
async fn post_text(address: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("the client address listens");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: keel\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())))
}

async fn post(address: &str, path: &str, body: &Value) -> (u16, Value) {
    post_text(address, path, &body.to_string()).await
}

async fn ok(address: &str, path: &str, body: Value) -> Value {
    let (status, answer) = post(address, path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reads_and_writes_etcds_json_over_the_shared_store() {
    let (_node, address) = node().await;
    let put = ok(&address, "/v3/kv/put", json!({"key": b64("/gw/a"), "value": b64("1")})).await;
    let revision: u64 = put["header"]["revision"].as_str().expect("int64 as a string").parse().unwrap();
    assert!(put["header"]["cluster_id"].is_string() && put["header"]["raft_term"].is_string(), "{put}");

    // The gRPC API sees the gateway's write, and the gateway sees the gRPC API's.
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect_lazy();
    let mut kv = KvClient::new(channel);
    let seen = kv.range(RangeRequest { key: "/gw/a".into(), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((seen.kvs[0].value.as_ref(), seen.kvs[0].mod_revision as u64), (&b"1"[..], revision));
    kv.put(PutRequest { key: "/gw/b".into(), value: "2".into(), ..Default::default() }).await.unwrap();
    let range = ok(&address, "/v3/kv/range", json!({"key": b64("/gw/"), "range_end": b64("/gw0")})).await;
    assert_eq!(range["count"], "2");
    assert_eq!(
        (range["kvs"][1]["key"].as_str(), range["kvs"][1]["value"].as_str()),
        (Some(&*b64("/gw/b")), Some(&*b64("2")))
    );

    // A transaction with a compare on the value, and a delete with its previous pair.
    let txn = json!({
        "compare": [{"key": b64("/gw/a"), "result": "EQUAL", "target": "VALUE", "value": b64("1")}],
        "success": [{"request_put": {"key": b64("/gw/a"), "value": b64("3")}}],
    });
    assert_eq!(ok(&address, "/v3/kv/txn", txn).await["succeeded"], true);
    let deleted = ok(&address, "/v3/kv/deleterange", json!({"key": b64("/gw/a"), "prev_kv": true})).await;
    assert_eq!((deleted["deleted"].as_str(), deleted["prev_kvs"][0]["value"].as_str()), (Some("1"), Some(&*b64("3"))));

    // Leases: grant, attach, time to live with keys, list, revoke (through the old path too).
    let lease = ok(&address, "/v3/lease/grant", json!({"TTL": "60"})).await;
    let id = lease["ID"].as_str().expect("the lease id").to_owned();
    ok(&address, "/v3/kv/put", json!({"key": b64("/gw/leased"), "value": b64("x"), "lease": id})).await;
    let ttl = ok(&address, "/v3/lease/timetolive", json!({"ID": id, "keys": true})).await;
    assert_eq!((ttl["grantedTTL"].as_str(), ttl["keys"][0].as_str()), (Some("60"), Some(&*b64("/gw/leased"))), "{ttl}");
    assert_eq!(ok(&address, "/v3/lease/leases", json!({})).await["leases"][0]["ID"].as_str(), Some(&*id));
    ok(&address, "/v3/kv/lease/revoke", json!({"ID": id})).await;
    assert_eq!(ok(&address, "/v3/kv/range", json!({"key": b64("/gw/leased")})).await.get("kvs"), None);

    // Cluster and maintenance, and the /v3beta alias.
    let members = ok(&address, "/v3/cluster/member/list", json!({})).await;
    assert_eq!(members["members"][0]["clientURLs"][0], format!("http://{address}"), "etcd's field names: {members}");
    assert_eq!(ok(&address, "/v3beta/maintenance/status", json!({})).await["version"], "3.4.0");

    // Errors: etcd's message and code, with grpc-gateway's HTTP status.
    let (status, error) = post(&address, "/v3/kv/range", &json!({"key": b64("/gw/b"), "revision": "999"})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"], "etcdserver: mvcc: required revision is a future revision");
    assert_eq!((error["code"].as_i64(), error["message"].clone()), (Some(11), error["error"].clone()));
    let (status, error) = post(&address, "/v3/lease/revoke", &json!({"ID": "12345"})).await;
    assert_eq!((status, error["error"].as_str()), (404, Some("etcdserver: requested lease not found")));
    let (status, error) = post_text(&address, "/v3/kv/put", r#"{"key": "not base64!"}"#).await;
    assert_eq!((status, error["code"].as_i64()), (400, Some(3)), "{error}");
    let (status, error) = post(&address, "/v3/auth/authenticate", &json!({"name": "root"})).await;
    let expected = (400, Some("etcdserver: authentication is not enabled"));
    assert_eq!((status, error["error"].as_str()), expected, "the Auth service answers: {error}");
    let (status, error) = post(&address, "/v3/kv/nothing", &json!({})).await;
    assert_eq!((status, error["error"].as_str()), (404, Some("Not Found")), "{error}");
}

/// The lines of a chunked HTTP/1.1 answer that hold JSON objects, as they arrive.
struct Lines(BufReader<tokio::net::TcpStream>);

impl Lines {
    async fn open(address: &str, path: &str, body: &Value) -> Self {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let body = body.to_string();
        let request = format!("POST {path} HTTP/1.1\r\nHost: keel\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).await.unwrap();
        Self(BufReader::new(stream))
    }

    /// The next JSON object, or `None` when the answer ends.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let mut line = String::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.0.read_line(&mut line)).await.expect("in time");
            if read.unwrap() == 0 {
                return None;
            }
            if line.trim() == "0" {
                return None; // the last chunk
            }
            if line.starts_with('{') {
                return Some(serde_json::from_str(line.trim()).unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_and_keep_alives_stream_json_lines() {
    let (_node, address) = node().await;
    let mut watch = Lines::open(
        &address,
        "/v3/watch",
        &json!({"create_request": {"key": b64("/w/"), "range_end": b64("/w0"), "prev_kv": true}}),
    )
    .await;
    let created = watch.next().await.expect("the created answer");
    assert_eq!(created["result"]["created"], true, "{created}");
    ok(&address, "/v3/kv/put", json!({"key": b64("/w/x"), "value": b64("1")})).await;
    ok(&address, "/v3/kv/put", json!({"key": b64("/w/x"), "value": b64("2")})).await;
    ok(&address, "/v3/kv/deleterange", json!({"key": b64("/w/x")})).await;
    let mut events = Vec::new();
    while events.len() < 3 {
        let answer = watch.next().await.expect("more events");
        events.extend(answer["result"]["events"].as_array().cloned().unwrap_or_default());
    }
    assert_eq!(events[0].get("type"), None, "PUT is the default type: {:?}", events[0]);
    assert_eq!(events[1]["prev_kv"]["value"].as_str(), Some(&*b64("1")));
    assert_eq!(events[2]["type"], "DELETE");

    let lease = ok(&address, "/v3/lease/grant", json!({"TTL": "30"})).await;
    let id = lease["ID"].as_str().unwrap().to_owned();
    let mut keep_alive = Lines::open(&address, "/v3/lease/keepalive", &json!({"ID": id})).await;
    let kept = keep_alive.next().await.expect("an answer");
    assert_eq!((kept["result"]["ID"].as_str(), kept["result"]["TTL"].as_str()), (Some(&*id), Some("30")), "{kept}");
    assert_eq!(keep_alive.next().await, None, "one request, one answer, then the stream ends");

    // As in etcd, a lease that does not exist is answered with a TTL of 0, not an error.
    let mut unknown = Lines::open(&address, "/v3/lease/keepalive", &json!({"ID": "777"})).await;
    let expired = unknown.next().await.expect("an answer");
    assert_eq!((expired["result"]["ID"].as_str(), expired["result"].get("TTL")), (Some("777"), None), "{expired}");
}
