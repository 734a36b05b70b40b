//! The in-process cluster of `keel bench --local`: [`LOCAL_NODES`] nodes on loopback ports with
//! `keel dev`'s configuration (fjall storage, fsync on) in a directory the caller owns.

use std::collections::BTreeMap;
use std::path::Path;

use keel_core::LeaseConfig;
use keel_runtime::server::{serve_with_listener, ServerError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::super::node::{dev_config, wait_for_leader};
use super::{Failure, LOCAL_NODES, LOCAL_STOP_TIMEOUT};

/// A cluster of [`LOCAL_NODES`] nodes on loopback ports, run in this process.
pub(super) struct LocalCluster {
    pub(super) endpoints: Vec<String>,
    pub(super) leader: (u32, u64),
    pub(super) stop: watch::Sender<bool>,
    pub(super) nodes: JoinSet<(u32, Result<(), ServerError>)>,
}

impl LocalCluster {
    /// Starts the nodes on free loopback ports, with `keel dev`'s configuration, and waits for a
    /// leader.
    pub(super) async fn start(dir: &Path, lease_drift_ppm: Option<u64>) -> Result<Self, Failure> {
        let mut listeners = Vec::new();
        for id in 1..=LOCAL_NODES {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|error| Failure::Failed(format!("cannot listen on a loopback port: {error}")))?;
            listeners.push((id, listener));
        }
        let mut members = BTreeMap::new();
        for (id, listener) in &listeners {
            let address = listener
                .local_addr()
                .map_err(|error| Failure::Failed(format!("cannot read a local address: {error}")))?;
            members.insert(*id, address.to_string());
        }
        let mut configs = Vec::new();
        for (id, listener) in listeners {
            let mut config = dev_config(id, &members, dir).map_err(Failure::Usage)?;
            if let Some(ppm) = lease_drift_ppm {
                config.node.raft.check_quorum = true;
                config.node.raft.lease = Some(LeaseConfig { clock_drift_ppm_max: ppm });
                config.validate().map_err(|error| Failure::Usage(format!("--lease-drift-ppm {ppm}: {error}")))?;
            }
            configs.push((id, listener, config));
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut nodes = JoinSet::new();
        for (id, listener, config) in configs {
            let mut stop = stop_rx.clone();
            nodes.spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                };
                (id, serve_with_listener(config, listener, shutdown).await)
            });
        }
        let endpoints: Vec<String> = members.values().cloned().collect();
        let mut cluster = Self { endpoints: endpoints.clone(), leader: (0, 0), stop, nodes };
        tokio::select! {
            leader = wait_for_leader(endpoints) => match leader {
                Some(leader) => cluster.leader = leader,
                None => {
                    let _ = cluster.stop().await;
                    return Err(Failure::Failed("the local cluster elected no leader in 30 s".into()));
                }
            },
            Some(joined) = cluster.nodes.join_next() => {
                let message = match joined {
                    Ok((id, Err(error))) => format!("local node {id} stopped: {error}"),
                    Ok((id, Ok(()))) => format!("local node {id} stopped unexpectedly"),
                    Err(error) => format!("a local node task failed: {error}"),
                };
                let _ = cluster.stop().await;
                return Err(Failure::Failed(message));
            }
        }
        Ok(cluster)
    }

    /// Stops the nodes and waits for them (bounded); fails if one stopped with an error.
    pub(super) async fn stop(&mut self) -> Result<(), Failure> {
        let _ = self.stop.send(true);
        let mut errors = Vec::new();
        let stopping = async {
            while let Some(joined) = self.nodes.join_next().await {
                match joined {
                    Ok((_, Ok(()))) => {}
                    Ok((id, Err(error))) => errors.push(format!("local node {id} stopped with an error: {error}")),
                    Err(error) => errors.push(format!("a local node task failed: {error}")),
                }
            }
        };
        if tokio::time::timeout(LOCAL_STOP_TIMEOUT, stopping).await.is_err() {
            errors.push(format!("the local nodes did not stop within {} s", LOCAL_STOP_TIMEOUT.as_secs()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Failure::Failed(errors.join("; ")))
        }
    }
}
