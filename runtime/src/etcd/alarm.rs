//! `Maintenance.Alarm` on the store's replicated alarms (`keel_core::kv::Alarm`).
//!
//! * **ACTIVATE** and **DEACTIVATE** are one `KvCommand::Alarm` each, through the log (a
//!   follower forwards them to the leader), so every member holds the same alarms, and they are
//!   in the store's snapshots: they survive restarts and leader changes. ACTIVATE answers the
//!   alarm raised; DEACTIVATE answers the alarm cleared, if it was raised (etcdctl's `alarm
//!   disarm` lists the alarms, then clears each one).
//! * **GET** lists the raised alarms of the kind asked (`NONE`: all), after a ReadIndex round,
//!   so it is linearizable.
//! * While a `NOSPACE` alarm is raised the store refuses, when applying, every write that can
//!   grow it (Put, a Txn with a put, LeaseGrant, and native writes) with etcd's `etcdserver:
//!   mvcc: database space exceeded` (`RESOURCE_EXHAUSTED`); reads, deletes, compaction, lease
//!   revokes and keep-alives still work.
//! * With a storage quota (`NodeConfig::kv_quota_bytes`, `keel node --quota-backend-bytes`, as
//!   etcd's flag), the leader raises `NOSPACE` for itself once the key-value data exceeds it
//!   (checked every `expire_interval_ms`, so a few writes may pass the quota first), and raises
//!   it again after a disarm while the data is still over the quota.

use keel::proto::etcdserverpb::alarm_request::AlarmAction;
use keel::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use keel::proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use keel_core::kv::{Alarm, KvCommand};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::forward::forwarded;
use super::{errors, Shared, Written};

/// The core alarm of an etcd alarm type; `None` for `NONE`.
fn alarm_of(kind: AlarmType) -> Option<Alarm> {
    match kind {
        AlarmType::None => None,
        AlarmType::Nospace => Some(Alarm::NoSpace),
        AlarmType::Corrupt => Some(Alarm::Corrupt),
    }
}

/// etcd's alarm type of a core alarm.
fn kind_of(alarm: Alarm) -> AlarmType {
    match alarm {
        Alarm::NoSpace => AlarmType::Nospace,
        Alarm::Corrupt => AlarmType::Corrupt,
    }
}

/// etcd's alarm member of a raised alarm.
fn member_of(member: u64, alarm: Alarm) -> AlarmMember {
    AlarmMember { member_id: member, alarm: kind_of(alarm) as i32 }
}

/// etcd's name of an alarm (`NOSPACE`): in health reasons and Status errors.
pub(super) fn alarm_name(alarm: Alarm) -> &'static str {
    kind_of(alarm).as_str_name()
}

/// The alarm etcd names `name` (as in a health check's `exclude=NOSPACE`); `None` for `NONE`
/// and unknown names.
pub(super) fn alarm_named(name: &str) -> Option<Alarm> {
    AlarmType::from_str_name(name).and_then(alarm_of)
}

/// A raised alarm as etcd lists it in `StatusResponse.errors` (and `etcdctl endpoint status`
/// shows it): the alarm member in protobuf text format, `memberID:<id> alarm:NOSPACE ` with its
/// trailing space.
pub(super) fn status_error(member: u64, alarm: Alarm) -> String {
    format!("memberID:{member} alarm:{} ", alarm_name(alarm))
}

/// The alarms raised on this node's store, of kind `filter` (all for `None`).
async fn raised(shared: &Shared, filter: Option<Alarm>) -> Result<Vec<(u64, Alarm)>, Status> {
    let alarms = shared.handle.alarms().await.map_err(|error| errors::of_client(&error))?;
    Ok(alarms.into_iter().filter(|(_, alarm)| filter.is_none_or(|kind| kind == *alarm)).collect())
}

/// Answers an etcd `Alarm` request (see the module documentation).
pub(super) async fn alarm(
    shared: &Shared,
    metadata: MetadataMap,
    request: AlarmRequest,
) -> Result<AlarmResponse, Status> {
    let action = AlarmAction::try_from(request.action)
        .map_err(|_| Status::invalid_argument(format!("etcdserver: unknown alarm action {}", request.action)))?;
    let kind = AlarmType::try_from(request.alarm)
        .map_err(|_| Status::invalid_argument(format!("etcdserver: unknown alarm type {}", request.alarm)))?;
    let alarms = match (action, alarm_of(kind)) {
        (AlarmAction::Get, filter) => {
            shared.read_barrier().await?;
            raised(shared, filter).await?
        }
        // etcd raises or clears nothing for the type NONE.
        (_, None) => Vec::new(),
        (AlarmAction::Activate | AlarmAction::Deactivate, Some(alarm)) => {
            let active = action == AlarmAction::Activate;
            let was_raised = raised(shared, Some(alarm)).await?.contains(&(request.member_id, alarm));
            let command = KvCommand::Alarm { member: request.member_id, alarm, active };
            if let Written::Elsewhere(hint) = shared.propose(command).await? {
                let mut client = MaintenanceClient::new(shared.forwarder.channel(&hint, &metadata).await?);
                return shared.forwarder.relay(&hint.address, client.alarm(forwarded(request, &metadata))).await;
            }
            if active || was_raised {
                vec![(request.member_id, alarm)]
            } else {
                Vec::new()
            }
        }
    };
    Ok(AlarmResponse {
        header: Some(shared.headers.header(None).await?),
        alarms: alarms.into_iter().map(|(member, alarm)| member_of(member, alarm)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_types_map_both_ways() {
        assert_eq!(alarm_of(AlarmType::None), None);
        for kind in [AlarmType::Nospace, AlarmType::Corrupt] {
            let alarm = alarm_of(kind).expect("a core alarm");
            assert_eq!(member_of(7, alarm), AlarmMember { member_id: 7, alarm: kind as i32 });
        }
    }
}
