//! A checksum of the key-value history up to a revision, equal on every replica that applied the
//! same commands: what etcd's `HashKV` reports, so that operators can compare members.
//!
//! It covers, in key order, every key with its versions at or below the revision (change id;
//! value, create revision, version, expiry deadline and lease of live versions; a marker for
//! tombstones), and leaves out what may differ between replicas (the applied index, which no-op
//! and membership entries advance). Compaction changes it, as in etcd: compare members at the
//! same revision and compacted revision.

use super::crc32::Crc32;
use super::error::KvError;
use super::store::KvStore;

impl KvStore {
    /// The CRC-32 of the history at or below `revision` (`None`: the current revision). Fails
    /// like a read at that revision when it is compacted or in the future.
    pub fn hash_kv(&self, revision: Option<u64>) -> Result<u32, KvError> {
        let revision = self.readable_revision(revision)?;
        let mut crc = Crc32::new();
        for (key, versions) in &self.keys {
            let kept = versions.partition_point(|version| version.change.revision <= revision);
            if kept == 0 {
                continue;
            }
            crc = crc.update(&(key.len() as u64).to_le_bytes()).update(key);
            for version in &versions[..kept] {
                crc = crc.update(&version.change.revision.to_le_bytes()).update(&version.change.sub.to_le_bytes());
                crc = match &version.live {
                    None => crc.update(&[0]),
                    Some(live) => crc
                        .update(&[1])
                        .update(&(live.value.len() as u64).to_le_bytes())
                        .update(&live.value)
                        .update(&live.create_revision.to_le_bytes())
                        .update(&live.version.to_le_bytes())
                        .update(&live.expires_at_ms.unwrap_or(0).to_le_bytes())
                        .update(&live.lease.to_le_bytes()),
                };
            }
        }
        Ok(crc.finish())
    }
}

#[cfg(test)]
mod tests {
    use crate::kv::{KvCommand, KvError, KvStore};

    fn store_with(commands: &[KvCommand]) -> KvStore {
        let mut store = KvStore::counting_from_zero();
        for (index, command) in commands.iter().enumerate() {
            store.apply(index as u64 + 1, 0, command);
        }
        store
    }

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put { key: key.as_bytes().to_vec().into(), value: value.as_bytes().to_vec().into(), ttl_ms: None }
    }

    #[test]
    fn equal_histories_hash_equal_and_later_changes_do_not_move_a_past_hash() {
        let first = store_with(&[put("a", "1"), put("b", "2")]);
        let mut second = store_with(&[put("a", "1"), put("b", "2")]);
        second.advance_applied_index(10); // a no-op entry: not part of the history
        assert_eq!(first.hash_kv(None), second.hash_kv(None));
        let at_two = first.hash_kv(Some(2)).unwrap();
        second.apply(11, 0, &put("a", "3"));
        assert_eq!(second.hash_kv(Some(2)), Ok(at_two));
        assert_ne!(second.hash_kv(None), Ok(at_two));
        assert_ne!(first.hash_kv(Some(1)), Ok(at_two));
        assert!(matches!(first.hash_kv(Some(9)), Err(KvError::FutureRevision { .. })));
        let different = store_with(&[put("a", "1"), put("b", "x")]);
        assert_ne!(different.hash_kv(None), first.hash_kv(None));
    }
}
