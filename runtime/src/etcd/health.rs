//! etcd's HTTP health check, `GET /health` on the client address: what load balancers,
//! orchestrators' probes and `curl` ask an etcd member, with etcd's own answer.
//!
//! A member is healthy when, in this order: no alarm is raised (the query's `exclude=NAME`
//! parameters, such as `exclude=NOSPACE`, ignore alarms by name); it knows a leader (skipped with
//! `serializable=true`); and a one-key read succeeds within a second, linearizable (ReadIndex,
//! confirmed by a quorum) or, with `serializable=true`, from local state. The answer is etcd's
//! JSON, `{"health":"true","reason":""}`, with status 200 when healthy and 503 otherwise; the
//! reason names the first check that failed: `ALARM NOSPACE`, `ALARM CORRUPT`, `RAFT NO LEADER`
//! or `QGET ERROR:<why>`. So a member cut off from the quorum reports itself unhealthy unless the
//! probe asks for `serializable=true`, which checks only that the member itself serves reads.
//!
//! [`check`] works on a [`NodeHandle`] and runs under the simulator like the rest of the node;
//! its HTTP route, [`http_route`], exists in plain builds only (served by `server.rs` on the
//! client address and by `metrics.rs` beside the metrics).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use keel_core::kv::Alarm;

use super::alarm::{alarm_name, alarm_named};
use crate::node::{NodeHandle, ReadConsistency};

/// How long the health check's read may take before the member counts as unhealthy (etcd's).
pub const READ_TIMEOUT_MS: u64 = 1_000;
/// The key the check reads; what it holds does not matter.
const PROBE_KEY: &[u8] = b"health";

/// What a `/health` request asks for, from its query string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthQuery {
    /// Alarms that do not count against health (`exclude=NOSPACE`, `exclude=CORRUPT`).
    pub excluded: BTreeSet<Alarm>,
    /// `serializable=true`: skip the leader check and read from local state.
    pub serializable: bool,
}

impl HealthQuery {
    /// Parses a query string such as `exclude=NOSPACE&serializable=true` (without the `?`).
    /// Unknown parameters and alarm names are ignored, as etcd ignores them.
    pub fn parse(query: Option<&str>) -> Self {
        let mut parsed = HealthQuery::default();
        for pair in query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "exclude" => parsed.excluded.extend(alarm_named(value)),
                "serializable" => parsed.serializable = value == "true",
                _ => {}
            }
        }
        parsed
    }
}

/// The outcome of a health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Whether the member passed every check.
    pub healthy: bool,
    /// Why not, in etcd's words; empty when healthy.
    pub reason: String,
}

impl Health {
    fn unhealthy(reason: String) -> Self {
        Health { healthy: false, reason }
    }

    /// etcd's body: `{"health":"true","reason":""}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "health": self.healthy.to_string(), "reason": self.reason }).to_string()
    }
}

/// Checks the member behind `handle` as etcd's `/health` does (see the module documentation).
pub async fn check(handle: &NodeHandle, query: &HealthQuery) -> Health {
    let alarms = match handle.alarms().await {
        Ok(alarms) => alarms,
        Err(error) => return Health::unhealthy(format!("QGET ERROR:{error}")),
    };
    if let Some((_, alarm)) = alarms.iter().find(|(_, alarm)| !query.excluded.contains(alarm)) {
        return Health::unhealthy(format!("ALARM {}", alarm_name(*alarm)));
    }
    if !query.serializable {
        match handle.status().await {
            Ok(status) if status.leader.leader_id.is_none() => {
                return Health::unhealthy("RAFT NO LEADER".to_owned());
            }
            Ok(_) => {}
            Err(error) => return Health::unhealthy(format!("QGET ERROR:{error}")),
        }
    }
    let consistency = if query.serializable { ReadConsistency::Eventual } else { ReadConsistency::Linearizable };
    let read = handle.read(vec![Bytes::from_static(PROBE_KEY)], consistency);
    match tokio::time::timeout(Duration::from_millis(READ_TIMEOUT_MS), read).await {
        Ok(Ok(_)) => Health { healthy: true, reason: String::new() },
        Ok(Err(error)) => Health::unhealthy(format!("QGET ERROR:{error}")),
        Err(_) => Health::unhealthy("QGET ERROR:the read timed out".to_owned()),
    }
}

/// The `GET /health` route answering with [`check`] on `handle` (etcd's status codes and body);
/// other methods get 405. Served on the client address (`server.rs`) and beside the metrics
/// (`metrics.rs`), as etcd serves it on its client and metrics URLs.
#[cfg(not(madsim))]
pub fn http_route(handle: NodeHandle) -> axum::routing::MethodRouter {
    use axum::http::{header, StatusCode};

    let probe = move |axum::extract::RawQuery(query): axum::extract::RawQuery| {
        let handle = handle.clone();
        async move {
            let health = check(&handle, &HealthQuery::parse(query.as_deref())).await;
            let status = if health.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, [(header::CONTENT_TYPE, "application/json")], health.to_json())
        }
    };
    axum::routing::get(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_names_excluded_alarms_and_serializable() {
        let query = HealthQuery::parse(Some("exclude=NOSPACE&serializable=true&exclude=BOGUS&other=1"));
        assert_eq!(query.excluded, BTreeSet::from([Alarm::NoSpace]));
        assert!(query.serializable);
        assert_eq!(HealthQuery::parse(None), HealthQuery::default());
        assert!(!HealthQuery::parse(Some("serializable=false")).serializable);
        assert!(!HealthQuery::parse(Some("serializable")).serializable);
        let both = HealthQuery::parse(Some("exclude=CORRUPT&exclude=NOSPACE"));
        assert_eq!(both.excluded, BTreeSet::from([Alarm::NoSpace, Alarm::Corrupt]));
    }

    #[test]
    fn the_answer_is_etcds_json_and_status() {
        let healthy = Health { healthy: true, reason: String::new() };
        assert_eq!(healthy.to_json(), r#"{"health":"true","reason":""}"#);
        let down = Health::unhealthy("RAFT NO LEADER".to_owned());
        assert_eq!(down.to_json(), r#"{"health":"false","reason":"RAFT NO LEADER"}"#);
    }
}
