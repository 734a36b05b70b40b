//! etcd authentication in the madsim scenario: on every other seed the cluster runs with it on,
//! so that the etcd share of the workload goes through token checks, permission checks and the
//! auth revision every write is proposed with, under the same faults and the same checker.
//!
//! Data flow: before the clients start, [`set_up`] (from a machine of its own) adds `root` with
//! the root role, a role with read and write permission on every key and the user
//! [`SIM_USER`] holding it, and enables authentication. The clients log in as that user
//! (`etcd_clients.rs`). During the faults, [`change`] grants or revokes a permission of an
//! unrelated role as `root`: each change moves the auth revision, so writes checked before it
//! and applied after it are refused as a whole (etcd's "revision of auth store is old"), which
//! the history records like any failed etcd write (outcome unknown). A wrongly applied or
//! wrongly refused write would show as a history no linearization explains.

use std::time::Duration;

use keel::proto::authpb::{permission, Permission};
use keel::proto::etcdserverpb::auth_client::AuthClient;
use keel::proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest,
    AuthUserAddRequest, AuthUserGrantRoleRequest,
};
use tonic::transport::Channel;
use tonic::Status;

use super::etcd_clients::{connect, log_in, with_token, CallFailure, Credentials};

/// The user the simulated etcd clients log in as.
pub const SIM_USER: &str = "sim";
/// Its password.
const SIM_PASSWORD: &str = "sim-password";
/// The root user's password.
const ROOT_PASSWORD: &str = "root-password";
/// The role whose permissions [`change`] grants and revokes.
const CHURN_ROLE: &str = "churn";
/// Longest wait for one call (virtual time).
const CALL_TIMEOUT: Duration = Duration::from_millis(3_000);

/// The simulated clients' credentials.
pub fn sim_credentials() -> Credentials {
    Credentials { user: SIM_USER.into(), password: SIM_PASSWORD.into() }
}

/// The `root` user's credentials.
pub fn root_credentials() -> Credentials {
    Credentials { user: "root".into(), password: ROOT_PASSWORD.into() }
}

/// Sets up the users and roles and enables authentication through the nodes at `addresses`,
/// retrying each step through the next node until it is answered (a step answered "already
/// exists" after an unanswered try is done). Bounded by the caller.
pub async fn set_up(addresses: &[String]) -> Result<(), String> {
    // An empty key with the range end "\0": every key.
    let all_keys =
        Permission { perm_type: permission::Type::Readwrite as i32, key: bytes::Bytes::new(), range_end: "\0".into() };
    let steps: Vec<Step> = vec![
        Step::UserAdd("root", ROOT_PASSWORD),
        Step::Grant("root", "root"),
        Step::RoleAdd("all-keys"),
        Step::Permit("all-keys", all_keys),
        Step::RoleAdd(CHURN_ROLE),
        Step::UserAdd(SIM_USER, SIM_PASSWORD),
        Step::Grant(SIM_USER, "all-keys"),
        Step::Enable,
    ];
    let mut nodes = addresses.iter().cycle();
    for step in &steps {
        loop {
            let address = nodes.next().ok_or("no node to set authentication up through")?;
            match step.run(address).await {
                Ok(()) => break,
                Err(status) if step.done_before(&status) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

/// One step of [`set_up`].
enum Step {
    UserAdd(&'static str, &'static str),
    Grant(&'static str, &'static str),
    RoleAdd(&'static str),
    Permit(&'static str, Permission),
    Enable,
}

impl Step {
    /// Whether `status`, the answer to a retry, says an earlier unanswered try took effect.
    fn done_before(&self, status: &Status) -> bool {
        match self {
            Step::UserAdd(..) | Step::RoleAdd(_) => status.message().ends_with("already exists"),
            // Enabled already: the retry, which carries no token, is asked for one.
            Step::Enable => status.message() == "etcdserver: user name is empty",
            Step::Grant(..) | Step::Permit(..) => false,
        }
    }

    async fn run(&self, address: &str) -> Result<(), Status> {
        let channel = connect(address).await.map_err(|_| Status::unavailable("no connection"))?;
        let mut auth = AuthClient::new(channel);
        let call = async {
            match self {
                Step::UserAdd(name, password) => {
                    let request =
                        AuthUserAddRequest { name: (*name).into(), password: (*password).into(), options: None };
                    auth.user_add(request).await.map(drop)
                }
                Step::Grant(user, role) => auth
                    .user_grant_role(AuthUserGrantRoleRequest { user: (*user).into(), role: (*role).into() })
                    .await
                    .map(drop),
                Step::RoleAdd(name) => auth.role_add(AuthRoleAddRequest { name: (*name).into() }).await.map(drop),
                Step::Permit(role, permission) => {
                    let request =
                        AuthRoleGrantPermissionRequest { name: (*role).into(), perm: Some(permission.clone()) };
                    auth.role_grant_permission(request).await.map(drop)
                }
                Step::Enable => auth.auth_enable(AuthEnableRequest {}).await.map(drop),
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| Status::deadline_exceeded("no answer"))?
    }
}

/// As `root`, through the node at `address`: grants (`grant`) or revokes the churn role's
/// permission on `/churn/<slot>`. Returns the trace line.
pub async fn change(address: &str, grant: bool, slot: u64) -> String {
    let verb = if grant { "grant" } else { "revoke" };
    let outcome = match change_once(address, grant, slot).await {
        Ok(()) => "ok".to_string(),
        Err(CallFailure::NoEffect) => "not sent".to_string(),
        Err(CallFailure::Unknown) => "no answer".to_string(),
    };
    format!("auth {verb} /churn/{slot} via {address}: {outcome}")
}

async fn change_once(address: &str, grant: bool, slot: u64) -> Result<(), CallFailure> {
    let channel: Channel = connect(address).await?;
    let token = log_in(&channel, &root_credentials()).await.map_err(|_| CallFailure::NoEffect)?;
    let mut auth = AuthClient::new(channel);
    let key: bytes::Bytes = format!("/churn/{slot}").into();
    let call = async {
        if grant {
            let perm = Permission { perm_type: permission::Type::Read as i32, key, range_end: bytes::Bytes::new() };
            let request = AuthRoleGrantPermissionRequest { name: CHURN_ROLE.into(), perm: Some(perm) };
            auth.role_grant_permission(with_token(Some(&token), request)).await.map(drop)
        } else {
            let request =
                AuthRoleRevokePermissionRequest { role: CHURN_ROLE.into(), key, range_end: bytes::Bytes::new() };
            auth.role_revoke_permission(with_token(Some(&token), request)).await.map(drop)
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        // Revoking a permission the role does not hold is an answer too.
        Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
        Ok(Err(_)) | Err(_) => Err(CallFailure::Unknown),
    }
}

/// Revokes the permission [`SIM_USER`] writes with (its role's read and write on every key)
/// through the nodes at `addresses` in turn, until one answers that it is revoked (or, after an
/// unanswered try that took effect, that it is not granted). Bounded by the caller.
pub async fn revoke_everything(addresses: &[String]) {
    for address in addresses.iter().cycle() {
        match revoke_everything_once(address).await {
            Ok(()) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn revoke_everything_once(address: &str) -> Result<(), CallFailure> {
    let channel: Channel = connect(address).await?;
    let token = log_in(&channel, &root_credentials()).await?;
    let request =
        AuthRoleRevokePermissionRequest { role: "all-keys".into(), key: bytes::Bytes::new(), range_end: "\0".into() };
    let mut auth = AuthClient::new(channel);
    let call = auth.role_revoke_permission(with_token(Some(&token), request));
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if status.message() == "etcdserver: permission is not granted to the role" => Ok(()),
        Ok(Err(_)) | Err(_) => Err(CallFailure::Unknown),
    }
}

/// One write of [`write_counter`]: the number written, when it was sent (virtual time), through
/// which API, and whether it was acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The counter value written.
    pub value: u64,
    /// When the write was sent.
    pub sent: tokio::time::Instant,
    /// Sent through the native API (`KeelClient`), else through the etcd API.
    pub native: bool,
    /// Whether it was acknowledged.
    pub acknowledged: bool,
}

/// Counter values are drawn from one sequence by every writer of [`write_counter`].
type Counter = std::sync::Arc<std::sync::atomic::AtomicU64>;
/// Where [`write_counter`]'s writers record their attempts.
type Attempts = std::sync::Arc<std::sync::Mutex<Vec<Attempt>>>;
/// What makes [`write_counter`]'s writers stop.
type Stop = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// As [`SIM_USER`], writes 1, 2, 3, ... to `key`, recording each attempt in `attempts`, until
/// `stop` is set: through the etcd API of the nodes at `addresses` in turn, one every 20 ms,
/// and at the same time through the native API (`KeelClient`, which checks its callers against
/// the same table), one writer per node, each writing every 5 ms, so that some native write
/// reaches a new leader soon after it is elected, while its auth table may still lag.
pub async fn write_counter(addresses: Vec<String>, key: &str, stop: Stop, attempts: Attempts) {
    let counter = Counter::default();
    let mut native = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let options = super::clients::client_options(7 + index as u32, false);
        if let Ok(client) = keel::client::KeelClient::new(vec![address.clone()], options) {
            let writer = native_writer(client, key.to_string(), counter.clone(), stop.clone(), attempts.clone());
            native.push(tokio::spawn(writer));
        }
    }
    let nodes = addresses.len().max(1);
    let mut clients = super::etcd_clients::EtcdClients::new(addresses, Some(sim_credentials()));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let value = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let sent = tokio::time::Instant::now();
        let acknowledged = clients.write(value as usize % nodes, key, Some(&value.to_string())).await.is_ok();
        record(&attempts, Attempt { value, sent, native: false, acknowledged });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for writer in native {
        let _ = writer.await;
    }
}

/// One native writer of [`write_counter`].
async fn native_writer(
    client: keel::client::KeelClient,
    key: String,
    counter: Counter,
    stop: Stop,
    attempts: Attempts,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let value = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let sent = tokio::time::Instant::now();
        let acknowledged = client.put(key.clone(), value.to_string(), None).await.is_ok();
        record(&attempts, Attempt { value, sent, native: true, acknowledged });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn record(attempts: &Attempts, attempt: Attempt) {
    if let Ok(mut attempts) = attempts.lock() {
        attempts.push(attempt);
    }
}

/// `key`'s value read linearizably as `root` through the first node at `addresses`, retried
/// until it answers (bounded by the caller).
pub async fn read_as_root(addresses: Vec<String>, key: &str) -> Option<String> {
    let mut clients = super::etcd_clients::EtcdClients::new(addresses, Some(root_credentials()));
    loop {
        if let Ok(value) = clients.read(0, key).await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
