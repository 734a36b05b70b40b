//! Leases (etcd's): a lease has a time to live; keys attached to it are deleted, through the
//! log, when it expires or is revoked.
//!
//! Everything about a lease is decided by applying log entries, so every replica agrees: a grant
//! ([`super::KvCommand::LeaseGrant`]) records `expires_at_ms = proposed_at_ms + ttl_ms` on the
//! proposing leader's clock; a keep-alive ([`super::KvCommand::LeaseKeepAlive`]) moves it to its
//! own stamp plus the TTL; a revoke deletes the lease and its keys at one revision; and the
//! leader's periodic [`super::KvCommand::Expire`]`{ now_ms }` (its clock minus the maximum clock
//! offset) deletes every lease due at `now_ms` with its keys, like keys with a TTL. The same
//! argument as for TTL keys (see the `kv` module) shows that a lease never expires before `ttl`
//! of real time has passed since its last grant or keep-alive.
//!
//! Like etcd, a new leader gives every lease its full TTL again
//! ([`super::KvCommand::LeaseRefreshAll`], proposed once per term before any expiry): clients
//! that could not reach the old leader to keep their leases alive are not punished for the
//! election. Leases are never expired while no leader exists.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::error::KvError;
use super::store::KvStore;

/// The state of one lease in the store. Its keys are an index rebuilt from the key histories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The time to live granted, in milliseconds.
    pub ttl_ms: u64,
    /// When an `Expire` at or after this time deletes it, on the proposing leaders' clocks.
    pub expires_at_ms: u64,
    /// The live keys attached to it.
    pub keys: BTreeSet<Bytes>,
}

/// A lease as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease id (never 0).
    pub id: u64,
    /// The time to live granted, in milliseconds.
    pub ttl_ms: u64,
    /// Its expiry deadline on the proposing leaders' clocks, in milliseconds.
    pub expires_at_ms: u64,
    /// The live keys attached to it, in key order.
    pub keys: Vec<Bytes>,
}

impl KvStore {
    /// The lease `id`, if it exists.
    pub fn lease(&self, id: u64) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|lease| LeaseInfo {
            id,
            ttl_ms: lease.ttl_ms,
            expires_at_ms: lease.expires_at_ms,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// The ids of every lease, in order.
    pub fn lease_ids(&self) -> Vec<u64> {
        self.leases.keys().copied().collect()
    }

    /// Grants lease `id` (0: the lowest unused id above every id granted so far).
    pub(crate) fn grant_lease(&mut self, id: u64, ttl_ms: u64, proposed_at_ms: u64) -> Result<u64, KvError> {
        let id = match id {
            0 => (self.last_lease_id.saturating_add(1)..u64::MAX)
                .find(|candidate| !self.leases.contains_key(candidate))
                .ok_or(KvError::LeaseExists)?,
            id if self.leases.contains_key(&id) => return Err(KvError::LeaseExists),
            id => id,
        };
        self.last_lease_id = self.last_lease_id.max(id);
        let expires_at_ms = proposed_at_ms.saturating_add(ttl_ms);
        self.leases.insert(id, Lease { ttl_ms, expires_at_ms, keys: BTreeSet::new() });
        self.lease_deadlines.insert((expires_at_ms, id));
        Ok(id)
    }

    /// Moves lease `id`'s deadline to `proposed_at_ms` plus its TTL.
    pub(crate) fn keep_lease_alive(&mut self, id: u64, proposed_at_ms: u64) -> Result<u64, KvError> {
        let ttl_ms = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?.ttl_ms;
        self.set_lease_deadline(id, proposed_at_ms.saturating_add(ttl_ms));
        Ok(ttl_ms)
    }

    /// Gives every lease its full TTL from `proposed_at_ms` (a new leader's first act).
    pub(crate) fn refresh_leases(&mut self, proposed_at_ms: u64) {
        let ids: Vec<(u64, u64)> = self.leases.iter().map(|(id, lease)| (*id, lease.ttl_ms)).collect();
        for (id, ttl_ms) in ids {
            self.set_lease_deadline(id, proposed_at_ms.saturating_add(ttl_ms));
        }
    }

    /// Removes lease `id`, returning its keys (which the caller deletes).
    pub(crate) fn remove_lease(&mut self, id: u64) -> Result<BTreeSet<Bytes>, KvError> {
        let lease = self.leases.remove(&id).ok_or(KvError::LeaseNotFound)?;
        self.lease_deadlines.remove(&(lease.expires_at_ms, id));
        Ok(lease.keys)
    }

    /// The leases due at `now_ms`, in deadline order.
    pub(crate) fn due_leases(&self, now_ms: u64) -> Vec<u64> {
        self.lease_deadlines.iter().take_while(|(deadline, _)| *deadline <= now_ms).map(|(_, id)| *id).collect()
    }

    /// Moves `key` from lease `old` to lease `new` (0: none) in the leases' key index.
    pub(crate) fn move_key_lease(&mut self, key: &Bytes, old: u64, new: u64) {
        if old == new {
            return;
        }
        if let Some(lease) = self.leases.get_mut(&old) {
            lease.keys.remove(key);
        }
        if let Some(lease) = self.leases.get_mut(&new) {
            lease.keys.insert(key.clone());
        }
    }

    fn set_lease_deadline(&mut self, id: u64, expires_at_ms: u64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            self.lease_deadlines.remove(&(lease.expires_at_ms, id));
            lease.expires_at_ms = expires_at_ms;
            self.lease_deadlines.insert((expires_at_ms, id));
        }
    }
}
