//! Checks on messages arriving from the network, before any of their fields is used. A message
//! that fails is dropped with a warning: network input never panics a node.

use crate::message::{Message, MessageBody};
use crate::node::RaftNode;

/// Why `message` must be dropped, if it must.
pub(crate) fn check_message(node: &RaftNode, message: &Message) -> Result<(), String> {
    if message.to != node.id {
        return Err(format!("addressed to node {}, this is node {}", message.to, node.id));
    }
    if message.from == 0 || message.from == node.id {
        return Err(format!("invalid sender {}", message.from));
    }
    match &message.body {
        MessageBody::AppendEntries { prev_log_id, entries, commit_notice, .. } => {
            if *commit_notice && !entries.is_empty() {
                return Err(format!("a commit notice carries {} entries; it carries none", entries.len()));
            }
            if prev_log_id.term > message.term {
                return Err(format!(
                    "previous entry term {} is above the message term {}",
                    prev_log_id.term, message.term
                ));
            }
            let mut previous = *prev_log_id;
            for entry in entries {
                if entry.log_id.index != previous.index + 1 {
                    return Err(format!("entries not contiguous: {} follows {}", entry.log_id, previous));
                }
                if entry.log_id.term < previous.term || entry.log_id.term > message.term {
                    return Err(format!(
                        "entry {} has a term out of order (message term {})",
                        entry.log_id, message.term
                    ));
                }
                previous = entry.log_id;
            }
        }
        MessageBody::RequestVote { last_log_id, .. } if last_log_id.term > message.term => {
            return Err(format!("candidate's last entry term {} is above its term {}", last_log_id.term, message.term));
        }
        MessageBody::InstallSnapshot { meta, offset, total_bytes, data } => {
            let end = offset.checked_add(data.len() as u64);
            if end.is_none_or(|end| end > *total_bytes) {
                return Err(format!(
                    "chunk at {offset} of {} bytes overruns the snapshot size {total_bytes}",
                    data.len()
                ));
            }
            if *total_bytes > node.config.snapshot_bytes_max {
                return Err(format!(
                    "snapshot of {total_bytes} bytes exceeds snapshot_bytes_max = {}",
                    node.config.snapshot_bytes_max
                ));
            }
            if meta.last_included.term > message.term {
                return Err("snapshot term is above the message term".to_string());
            }
        }
        MessageBody::ReadIndexRequest { read_ids } | MessageBody::ReadIndexResponse { read_ids, .. }
            if read_ids.len() > node.config.pending_reads_max =>
        {
            return Err(format!(
                "{} read ids exceed pending_reads_max = {}",
                read_ids.len(),
                node.config.pending_reads_max
            ));
        }
        _ => {}
    }
    Ok(())
}
