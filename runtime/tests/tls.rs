//! TLS between nodes and from clients (plain build only): three node servers in this process,
//! each serving one certificate to clients and peers, with certificates made at run time
//! (`tests/e2e/pki.rs`). Checks that a cluster elects and replicates over mutually
//! authenticated peer links, that the native and etcd APIs answer over TLS (a follower forwarding
//! an etcd write to the leader over TLS too), and that the listener refuses plain text, clients
//! without a certificate when `client_cert_auth` is on, and certificates from an authority the
//! nodes do not trust, while a client of a node without `client_cert_auth` needs none. An
//! HTTP/1.1-only TLS client (as Python's urllib3 is: Patroni, etcd3gw) reaches etcd's JSON
//! gateway and `/health`. Certificate files rotated on disk, to a new authority, are used
//! without a restart, by the listener and by a node's own new connections.
#![cfg(not(madsim))]

#[path = "../../tests/e2e/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use keel::client::{ClientOptions, Consistency, KeelClient, Role};
use keel::proto::etcdserverpb::cluster_client::ClusterClient;
use keel::proto::etcdserverpb::kv_client::KvClient;
use keel::proto::etcdserverpb::{MemberListRequest, PutRequest, RangeRequest};
use keel::tls::ClientTls;
use keel_runtime::node::NodeConfig;
use keel_runtime::server::{serve_with_listener, ServerConfig, ServerError};
use keel_runtime::tls::NodeTls;
use keel_runtime::tls_reload::RELOAD_CHECK_INTERVAL;
use pki::Pki;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound on any wait.
const WAIT: Duration = Duration::from_secs(20);

/// A running server: what stops it, and its task.
type Running = (oneshot::Sender<()>, JoinHandle<Result<(), ServerError>>);

struct Cluster {
    addresses: BTreeMap<u32, SocketAddr>,
    servers: Vec<Running>,
}

impl Cluster {
    /// `size` in-memory nodes with loopback timings, all serving `tls`.
    async fn start(size: u32, tls: &NodeTls) -> Self {
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        for id in 1..=size {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
            members.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let mut addresses = BTreeMap::new();
        let mut servers = Vec::new();
        for (id, listener) in listeners {
            let addr = listener.local_addr().unwrap();
            addresses.insert(id, addr);
            let mut node = NodeConfig::new(id, members.clone());
            node.raft.heartbeat_interval_ms = 30;
            node.raft.election_timeout_ms_min = 300;
            node.raft.election_timeout_ms_max = 600;
            let mut config = ServerConfig::new(node, addr);
            config.transport.call_timeout_ms = 500;
            config.tls = Some(tls.clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_with_listener(config, listener, async move {
                let _ = stopped.await;
            }));
            servers.push((stop, task));
        }
        Self { addresses, servers }
    }

    fn endpoints(&self) -> Vec<String> {
        self.addresses.values().map(ToString::to_string).collect()
    }

    async fn stop(self) {
        for (stop, task) in self.servers {
            let _ = stop.send(());
            let result = timeout(WAIT, task).await.expect("the server stops in time").unwrap();
            assert!(result.is_ok(), "{result:?}");
        }
    }
}

fn node_tls(pki: &Pki, client_cert_auth: bool) -> NodeTls {
    NodeTls::from_files(&pki.node_cert, &pki.node_key, &pki.ca, client_cert_auth).expect("the test certificates load")
}

/// A client of `endpoints` over `tls` (plain text with `None`) that gives up quickly.
fn client(endpoints: Vec<String>, tls: Option<ClientTls>, attempts: u32) -> KeelClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        deadline: WAIT,
        max_attempts: attempts,
        backoff_max: Duration::from_millis(200),
        tls,
        ..ClientOptions::default()
    };
    KeelClient::new(endpoints, options).expect("valid endpoints")
}

/// The leader's id and every follower's, once one leads; polled over `tls`.
async fn roles(client: &KeelClient) -> (u32, Vec<u32>) {
    timeout(WAIT, async {
        loop {
            let statuses: Vec<_> =
                client.status_all().await.into_iter().filter_map(|(_, status)| status.ok()).collect();
            if let Some(leader) = statuses.iter().find(|status| status.role == Role::Leader && status.has_quorum) {
                let followers = statuses.iter().filter(|status| status.id != leader.id).map(|status| status.id);
                return (leader.id, followers.collect());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a leader is elected over TLS peer links")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_client_cert_auth_serves_only_trusted_clients_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let cluster = Cluster::start(3, &node_tls(&pki, true)).await;
    let trusted = ClientTls::from_files(&pki.ca, Some(&pki.client_cert), Some(&pki.client_key)).unwrap();

    // Elected and replicating: the peers' mutually authenticated links work.
    let native = client(cluster.endpoints(), Some(trusted.clone()), 10);
    let (leader, followers) = roles(&native).await;
    native.put("/secure", "yes", None).await.expect("a write over TLS");
    let found = native.get(["/secure"], Consistency::Linearizable).await.expect("a read over TLS");
    assert_eq!(found[0].value, "yes");

    // The etcd API over TLS; a follower forwards the write to the leader over TLS.
    let follower = cluster.addresses[&followers[0]].to_string();
    let channel = keel::tls::endpoint(&follower, Some(&trusted)).unwrap().connect().await.expect("a TLS connection");
    let put = PutRequest { key: "/etcd".into(), value: "v".into(), ..PutRequest::default() };
    let written = KvClient::new(channel.clone()).put(put).await.expect("a forwarded etcd write").into_inner();
    let header = written.header.expect("a header");
    assert_eq!(header.member_id, u64::from(followers[0]), "the member asked answers, as in etcd");
    let leader_address = cluster.addresses[&leader].to_string();
    let leader_channel = keel::tls::endpoint(&leader_address, Some(&trusted)).unwrap().connect().await.unwrap();
    let range = RangeRequest { key: "/etcd".into(), ..RangeRequest::default() };
    let answer = KvClient::new(leader_channel).range(range).await.unwrap().into_inner();
    assert_eq!(answer.kvs[0].value.as_ref(), b"v");
    let members = ClusterClient::new(channel).member_list(MemberListRequest::default()).await.unwrap().into_inner();
    assert!(members.members.iter().all(|member| member.client_ur_ls[0].starts_with("https://")), "{members:?}");

    // Refused: plain text, no client certificate, and a certificate from an unknown authority.
    let plain = client(cluster.endpoints(), None, 2);
    plain.put("/x", "plain", None).await.expect_err("plain text is refused");
    let anonymous = client(cluster.endpoints(), Some(ClientTls::from_files(&pki.ca, None, None).unwrap()), 2);
    anonymous.put("/x", "anonymous", None).await.expect_err("a client without a certificate is refused");
    let stranger = ClientTls::from_files(&pki.ca, Some(&pki.other_client_cert), Some(&pki.other_client_key)).unwrap();
    client(cluster.endpoints(), Some(stranger), 2).put("/x", "stranger", None).await.expect_err("an unknown authority");
    // A client that trusts another authority does not accept the nodes' certificate.
    let misled = ClientTls::from_files(&pki.other_ca, Some(&pki.client_cert), Some(&pki.client_key)).unwrap();
    client(cluster.endpoints(), Some(misled), 2).put("/x", "misled", None).await.expect_err("an untrusted node");
    // None of the refused writes happened. (The client cannot tell: with TLS 1.3 it learns of
    // the refusal only after sending, so it reports each write's outcome as unknown.)
    let absent = native.get(["/x"], Consistency::Linearizable).await.unwrap();
    assert!(absent.is_empty(), "{absent:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_cert_auth_a_client_needs_only_the_authority() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let cluster = Cluster::start(1, &node_tls(&pki, false)).await;
    let anonymous = client(cluster.endpoints(), Some(ClientTls::from_files(&pki.ca, None, None).unwrap()), 10);
    roles(&anonymous).await;
    anonymous.put("/k", "v", None).await.expect("a write from a client without a certificate");
    let found = anonymous.get(["/k"], Consistency::Linearizable).await.unwrap();
    assert_eq!(found[0].value, "v");
    client(cluster.endpoints(), None, 2).put("/k", "plain", None).await.expect_err("plain text is still refused");
    // A node reached by an address its certificate does not name is verified against the name
    // given instead: the node certificate names `localhost`, not `example.invalid`.
    let authority = || ClientTls::from_files(&pki.ca, None, None).unwrap();
    let named = client(cluster.endpoints(), Some(authority().with_domain_name("localhost")), 10);
    named.put("/named", "v", None).await.expect("verified as localhost");
    let misnamed = client(cluster.endpoints(), Some(authority().with_domain_name("example.invalid")), 2);
    misnamed.get(["/k"], Consistency::Linearizable).await.expect_err("the certificate does not name it");
    cluster.stop().await;
}

/// Replaces `live` with a copy of `source` the way operators should: a complete file renamed
/// over the old one.
fn replace(live: &std::path::Path, source: &[u8]) {
    let staged = live.with_extension("new");
    std::fs::write(&staged, source).expect("a staged file");
    std::fs::rename(&staged, live).expect("renamed over the live file");
}

/// An etcd write to the node at `address`, by a client showing and trusting `tls`.
async fn etcd_put(address: SocketAddr, tls: &ClientTls, key: &str) -> Result<u64, String> {
    let endpoint = keel::tls::endpoint(&address.to_string(), Some(tls)).map_err(|error| error.to_string())?;
    let channel = endpoint.connect().await.map_err(|error| format!("{error:?}"))?;
    let put = PutRequest { key: key.as_bytes().to_vec().into(), value: "v".into(), ..PutRequest::default() };
    let written = KvClient::new(channel).put(put).await.map_err(|status| status.to_string())?.into_inner();
    Ok(written.header.map_or(0, |header| header.member_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        Pki::create(&path)
    };
    let (old, new, live) = (make("old"), make("new"), dir.path().join("live"));
    std::fs::create_dir(&live).unwrap();
    let read = |path: &std::path::Path| std::fs::read(path).unwrap();
    let (cert, key, ca) = (live.join("node.pem"), live.join("node-key.pem"), live.join("ca.pem"));
    // The start of a rotation: the old certificate, both authorities trusted.
    replace(&cert, &read(&old.node_cert));
    replace(&key, &read(&old.node_key));
    replace(&ca, &[read(&old.ca), read(&new.ca)].concat());
    let tls = NodeTls::from_files(&cert, &key, &ca, true).expect("the live files load");
    let cluster = Cluster::start(3, &tls).await;
    let old_client = ClientTls::from_files(&old.ca, Some(&old.client_cert), Some(&old.client_key)).unwrap();
    let new_client = ClientTls::from_files(&new.ca, Some(&new.client_cert), Some(&new.client_key)).unwrap();
    let native = client(cluster.endpoints(), Some(old_client.clone()), 10);
    let (leader, followers) = roles(&native).await;
    let (leader, follower) = (cluster.addresses[&leader], cluster.addresses[&followers[0]]);
    etcd_put(leader, &new_client, "/before").await.expect_err("the old certificate is not trusted by the new client");

    // The new certificate: used for new connections once the node looks (within a second).
    replace(&cert, &read(&new.node_cert));
    replace(&key, &read(&new.node_key));
    tokio::time::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
    etcd_put(leader, &new_client, "/after").await.expect("the rotated certificate is served");

    // The end of the rotation: only the new authority is trusted. A write to a follower is
    // forwarded over a new connection to the leader, which the leader accepts only if the
    // follower shows its rotated certificate (a node's outbound TLS is reloaded too).
    replace(&ca, &read(&new.ca));
    tokio::time::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
    etcd_put(leader, &old_client, "/old").await.expect_err("the old authority's clients are refused");
    let answered_by = etcd_put(follower, &new_client, "/forwarded").await.expect("forwarded to the leader");
    assert_eq!(answered_by, u64::from(followers[0]));
    // The peer links opened before the rotation go on replicating.
    let reader = client(cluster.endpoints(), Some(new_client), 10);
    let found = reader.get(["/after", "/forwarded", "/old"], Consistency::Linearizable).await.unwrap();
    let keys: Vec<&[u8]> = found.iter().map(|entry| entry.key.as_ref()).collect();
    assert_eq!(keys, [b"/after".as_slice(), b"/forwarded"]);
    cluster.stop().await;
}

/// An HTTP/1.1 request over TLS from a client that offers only `http/1.1` in its handshake, as
/// Python's urllib3 does: the status line and the body.
async fn https_1_1(address: SocketAddr, pki: &Pki, request: &str) -> (String, String) {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let load = |path: &std::path::Path| std::fs::read(path).unwrap();
    let client_tls = ClientTls::from_pem(load(&pki.ca)).unwrap();
    let identity = keel::tls::TlsIdentity::from_pem(load(&pki.client_cert), load(&pki.client_key)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in client_tls.trusted_certificates().unwrap() {
        roots.add(certificate).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.certificate_chain().unwrap(), identity.private_key().unwrap())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let mut stream = connector.connect(name, tcp).await.expect("a TLS handshake offering only http/1.1");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await; // the server may close without close_notify
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_clients_reach_the_json_gateway_and_health_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let cluster = Cluster::start(1, &node_tls(&pki, true)).await;
    let trusted = ClientTls::from_files(&pki.ca, Some(&pki.client_cert), Some(&pki.client_key)).unwrap();
    roles(&client(cluster.endpoints(), Some(trusted), 10)).await;
    let address = cluster.addresses[&1];
    let body = r#"{"key":"L3g=","value":"MQ=="}"#;
    let put = format!(
        "POST /v3/kv/put HTTP/1.1\r\nHost: keel\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = https_1_1(address, &pki, &put).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{answer}");
    assert!(answer.contains("\"revision\":\"2\""), "{answer}");
    let health = "GET /health HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n";
    let (status, answer) = https_1_1(address, &pki, health).await;
    assert_eq!((status.as_str(), answer.as_str()), ("HTTP/1.1 200 OK", r#"{"health":"true","reason":""}"#));
    cluster.stop().await;
}

/// `message` as a request carrying the etcd auth `token`, if any.
fn with_token<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("token", token.parse().expect("an ASCII token"));
    }
    request
}

/// With `client_cert_auth` and etcd authentication on, a request without a token is made by
/// the user its client certificate names (`keel-client` here), through the leader and through a
/// follower, which forwards it; a certificate naming no user is anonymous, and a token wins
/// over the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_its_common_name_in_as_an_etcd_user() {
    use keel::proto::authpb::{permission, Permission, UserAddOptions};
    use keel::proto::etcdserverpb::auth_client::AuthClient;
    use keel::proto::etcdserverpb::{
        AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
        AuthUserGrantRoleRequest, AuthenticateRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(dir.path());
    let cluster = Cluster::start(3, &node_tls(&pki, true)).await;
    let trusted = ClientTls::from_files(&pki.ca, Some(&pki.client_cert), Some(&pki.client_key)).unwrap();
    let (leader, followers) = roles(&client(cluster.endpoints(), Some(trusted.clone()), 10)).await;
    let connect = |id: u32, tls: ClientTls| {
        let address = cluster.addresses[&id].to_string();
        async move { keel::tls::endpoint(&address, Some(&tls)).unwrap().connect().await.expect("a TLS connection") }
    };
    let leader_channel = connect(leader, trusted.clone()).await;
    let mut auth = AuthClient::new(leader_channel.clone());
    auth.user_add(AuthUserAddRequest { name: "root".into(), password: "pw".into(), options: None }).await.unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() }).await.unwrap();
    auth.role_add(AuthRoleAddRequest { name: "app".into() }).await.unwrap();
    let perm =
        Permission { perm_type: permission::Type::Readwrite as i32, key: "/app/".into(), range_end: "/app0".into() };
    auth.role_grant_permission(AuthRoleGrantPermissionRequest { name: "app".into(), perm: Some(perm) }).await.unwrap();
    let options = Some(UserAddOptions { no_password: true });
    auth.user_add(AuthUserAddRequest { name: "keel-client".into(), password: String::new(), options }).await.unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "keel-client".into(), role: "app".into() }).await.unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();

    let put =
        |key: &str| PutRequest { key: key.as_bytes().to_vec().into(), value: "v".into(), ..PutRequest::default() };
    let follower_channel = connect(followers[0], trusted.clone()).await;
    for channel in [&leader_channel, &follower_channel] {
        let mut kv = KvClient::new(channel.clone());
        kv.put(with_token(None, put("/app/a"))).await.expect("keel-client writes inside its role");
        let refused = kv.put(with_token(None, put("/other"))).await.expect_err("outside its role");
        assert_eq!(refused.message(), "etcdserver: permission denied");
    }
    // The node's certificate is a client certificate too, naming no user: anonymous.
    let node_as_client = ClientTls::from_files(&pki.ca, Some(&pki.node_cert), Some(&pki.node_key)).unwrap();
    let mut anonymous = KvClient::new(connect(leader, node_as_client).await);
    let refused = anonymous.put(with_token(None, put("/app/b"))).await.expect_err("no such user");
    assert_eq!(refused.message(), "etcdserver: user name is empty");
    // A token wins over the certificate.
    let login = AuthenticateRequest { name: "root".into(), password: "pw".into() };
    let root = auth.authenticate(login).await.unwrap().into_inner().token;
    KvClient::new(follower_channel).put(with_token(Some(&root), put("/other"))).await.expect("root writes anywhere");
    cluster.stop().await;
}
