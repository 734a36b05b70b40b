//! The periodic corruption check (`runtime/src/etcd/corruption.rs`): the leader compares each
//! member's `HashKV` with its own and raises etcd's CORRUPT alarm for a member that differs, and
//! never for members whose stores agree (plain build only).
//!
//! A diverged store cannot be made through the API, so the diverged member here is a stand-in:
//! member 3's address serves only a `Maintenance` service that answers every `HashKV` with the
//! leader's compaction revision and a wrong hash. Members 1 and 2 are real and form the quorum.
#![cfg(not(madsim))]

use std::collections::BTreeMap;
use std::time::Duration;

use keel::proto::etcdserverpb::alarm_request::AlarmAction;
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use keel::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, PutRequest, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use keel_runtime::embedded::EmbeddedNode;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::ServerConfig;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A member whose store "differs": every hash it reports is `HASH`. With `vouching` set (the
/// address of a real member), only to a request whose auth token that member accepts for its own
/// HashKV, which needs the root role while authentication is on.
struct Diverged {
    vouching: Option<String>,
}

const HASH: u32 = 0xDEAD_BEEF;

#[tonic::async_trait]
impl Maintenance for Diverged {
    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        if let Some(real) = &self.vouching {
            let token = request.metadata().get("token").cloned().ok_or_else(|| Status::unauthenticated("no token"))?;
            let mut asked = Request::new(HashKvRequest { revision: 0 });
            asked.metadata_mut().insert("token", token);
            MaintenanceClient::new(channel(real)).hash_kv(asked).await?;
        }
        Ok(Response::new(HashKvResponse { header: None, hash: HASH, compact_revision: 0 }))
    }
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn defragment(&self, _: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    type SnapshotStream = tonic::codegen::BoxStream<SnapshotResponse>;
    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn move_leader(&self, _: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("bound").to_string()
}

/// Starts the real members of `members` (all but `skip`), checking every 100 ms.
async fn start(members: &BTreeMap<u32, String>, skip: Option<u32>) -> Vec<EmbeddedNode> {
    let mut nodes = Vec::new();
    for (&id, address) in members.iter().filter(|(id, _)| Some(**id) != skip) {
        let mut node = NodeConfig::new(id, members.clone());
        node.raft.election_timeout_ms_min = 200;
        node.raft.election_timeout_ms_max = 400;
        node.raft.heartbeat_interval_ms = 50;
        node.corrupt_check_interval_ms = 100;
        let config = ServerConfig::new(node, address.parse().expect("an address"));
        nodes.push(EmbeddedNode::start(config).await.expect("the node starts"));
    }
    nodes
}

fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}")).expect("a URI").connect_lazy()
}

/// Writes through `address` until a write succeeds (a leader is elected), then `count` more.
async fn write(address: &str, count: usize) {
    let mut kv = KvClient::new(channel(address));
    let put =
        |i: usize| PutRequest { key: format!("/k{i}").into(), value: format!("v{i}").into(), ..Default::default() };
    let mut done = 0;
    for attempt in 0..400 {
        if kv.put(put(attempt)).await.is_ok() {
            done += 1;
            if done > count {
                return;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    panic!("the cluster took only {done} writes");
}

/// The alarms raised, as (member, type), by a linearizable `alarm list` through `address`.
async fn alarms(address: &str) -> Vec<(u64, i32)> {
    let request = AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: AlarmType::None as i32 };
    let answer = MaintenanceClient::new(channel(address)).alarm(request).await.expect("alarm list answers");
    answer.into_inner().alarms.iter().map(|AlarmMember { member_id, alarm }| (*member_id, *alarm)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_hash_differs_gets_the_corrupt_alarm_and_no_one_else_does() {
    let members: BTreeMap<u32, String> = (1..=3).map(|id| (id, free_address())).collect();
    let stand_in = members[&3].parse().expect("an address");
    let diverged = Diverged { vouching: None };
    let server =
        tokio::spawn(tonic::transport::Server::builder().add_service(MaintenanceServer::new(diverged)).serve(stand_in));
    let nodes = start(&members, Some(3)).await;
    write(&members[&1], 20).await;
    let corrupt = (3, AlarmType::Corrupt as i32);
    let listed = wait_for_alarm(&members[&1], corrupt).await;
    assert_eq!(listed, vec![corrupt], "CORRUPT for member 3 only, once");
    // Raised once: later rounds find it raised and propose nothing more; every member sees it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alarms(&members[&2]).await, vec![corrupt]);
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
    server.abort();
}

/// The alarms listed through `address` once `alarm` is among them (or after 5 s).
async fn wait_for_alarm(address: &str, alarm: (u64, i32)) -> Vec<(u64, i32)> {
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = alarms(address).await;
        if listed.contains(&alarm) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    listed
}

/// With etcd authentication on, HashKV needs the root role: the leader's check shows a root
/// token of its own, which the other members accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_on_the_check_still_compares_hashes() {
    use keel::proto::etcdserverpb::auth_client::AuthClient;
    use keel::proto::etcdserverpb::{AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest};
    let members: BTreeMap<u32, String> = (1..=3).map(|id| (id, free_address())).collect();
    let stand_in = members[&3].parse().expect("an address");
    let diverged = Diverged { vouching: Some(members[&2].clone()) };
    let server =
        tokio::spawn(tonic::transport::Server::builder().add_service(MaintenanceServer::new(diverged)).serve(stand_in));
    let nodes = start(&members, Some(3)).await;
    write(&members[&1], 5).await;
    let mut auth = AuthClient::new(channel(&members[&1]));
    let root = AuthUserAddRequest { name: "root".into(), password: "pw".into(), options: None };
    auth.user_add(root).await.expect("root added");
    let grant = AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
    auth.user_grant_role(grant).await.expect("root role granted");
    auth.auth_enable(AuthEnableRequest {}).await.expect("authentication enabled");
    let corrupt = (3, AlarmType::Corrupt as i32);
    assert_eq!(wait_for_alarm(&members[&1], corrupt).await, vec![corrupt], "member 2 vouched for the token");
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_whose_stores_agree_raise_nothing_while_writes_go_on() {
    let members: BTreeMap<u32, String> = (1..=3).map(|id| (id, free_address())).collect();
    let nodes = start(&members, None).await;
    // About 2 s of writes: some 20 check rounds, each comparing two followers' hashes taken while
    // the revision moves on.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        write(&members[&1], 10).await;
    }
    for address in members.values() {
        assert_eq!(alarms(address).await, Vec::new(), "no alarm on {address}");
    }
    for node in nodes {
        node.shutdown().await.expect("a clean stop");
    }
}
