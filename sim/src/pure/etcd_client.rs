//! Carrying etcd operations: their writes go through the same proposal path as the native ones
//! (`clients.rs`) and are answered here with the node's apply result, as the runtime's etcd layer
//! answers them; ranges are served after a linearizable read is released, at the revision asked
//! for; watches start from a past revision. Each answer is left in the [`super::etcd_history`]
//! for the checks and shown to the workload, which draws later compares and revisions from it.
//!
//! Data flow: `clients.rs` calls [`Simulator::answer_etcd_write`] when an etcd write's entry is
//! applied at its node, [`Simulator::serve_etcd_range`] when its read is released, and
//! [`Simulator::open_etcd_watch`] to open a watch; each ends in [`Simulator::finish`] (a watch
//! when its stream closes).

use keel_core::kv::KvCommand;
use keel_core::NodeId;

use super::etcd_history::Observation;
use super::etcd_workload::EtcdOperation;
use super::mvcc_model::Reply;
use super::node::AppliedEntry;
use super::recorder::WatchStream;
use super::reference::{event_record, EventRecord};
use super::simulator::Simulator;
use super::workload::{Operation, OperationKind};
use crate::history::EventType;

impl Simulator {
    /// Client `index`'s etcd write was applied at its own entry: the client receives the reply.
    pub(crate) fn answer_etcd_write(&mut self, index: usize, applied: &AppliedEntry) {
        let Some(result) = applied.result.as_ref() else { return self.finish(index, EventType::Fail, None) };
        let reply = Reply::of(result);
        let process = self.clients[index].process as usize;
        let command = applied.command.as_ref().map(|(_, command)| command);
        self.workload.etcd.observe(process, command, reply.revision, &reply.responses);
        self.recorder.acknowledge(applied.log_id);
        self.etcd.answered(Observation::Write { log_id: applied.log_id, reply });
        self.finish(index, EventType::Ok, None);
    }

    /// Client `index`'s linearizable range was released at `node`: served from its store at the
    /// revision asked for (the compacted or future revision error otherwise).
    pub(crate) fn serve_etcd_range(&mut self, index: usize, node: NodeId, operation: &Operation) {
        let OperationKind::Etcd(EtcdOperation::Range { range, revision, limit }) = &operation.kind else { return };
        let store = &self.nodes[&node].kv;
        let asked = (*revision > 0).then_some(*revision);
        let result = store.range(range, asked, usize::try_from(*limit).unwrap_or(usize::MAX));
        let header_revision = store.current_revision();
        let applied_index = store.last_applied_index();
        if let Ok(found) = &result {
            let responses = [keel_core::kv::OpResponse::Range(found.clone())];
            self.workload.etcd.observe(operation.process as usize, None, header_revision, &responses);
        }
        let (range, revision, limit) = (range.clone(), *revision, *limit);
        self.etcd.answered(Observation::Range { node, applied_index, header_revision, range, revision, limit, result });
        self.finish(index, EventType::Ok, None);
    }

    /// Opens client `index`'s watch of the operation's prefix at `target` from `start_revision`;
    /// a start below the node's compaction point is refused (etcd cancels such a watch).
    pub(crate) fn open_etcd_watch(&mut self, index: usize, target: NodeId, operation: &Operation, start_revision: u64) {
        let OperationKind::Etcd(EtcdOperation::Watch { duration_ms, .. }) = operation.kind else { return };
        let node = &self.nodes[&target];
        let after_revision = start_revision.saturating_sub(1);
        let prefix = operation.key.clone();
        let replay: Vec<EventRecord> = match node.kv.watch(after_revision) {
            Ok(watch) => watch.map(|e| event_record(&e)).filter(|e| e.key.starts_with(&prefix)).collect(),
            Err(error) => {
                let applied_index = node.kv.last_applied_index();
                self.etcd.answered(Observation::WatchRefused { node: target, applied_index, after_revision, error });
                return self.finish(index, EventType::Ok, None);
            }
        };
        self.recorder.watches.push(WatchStream {
            node: target,
            prefix,
            after_revision,
            events: replay,
            covered_through: None,
        });
        let client = &mut self.clients[index];
        client.stage = super::clients::Stage::Watching(target, self.recorder.watches.len() - 1);
        if let Some(operation) = client.operation.as_mut() {
            operation.deadline_ms = self.now_ms + duration_ms;
        }
    }
}

/// The command an etcd write proposes.
pub fn etcd_command(operation: &Operation) -> Option<&KvCommand> {
    match &operation.kind {
        OperationKind::Etcd(EtcdOperation::Write(command)) => Some(command),
        _ => None,
    }
}
