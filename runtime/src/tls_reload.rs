//! Certificate rotation without a restart: a node that read its TLS from files
//! ([`NodeTls::from_files`]) notices when they change and uses the new ones from then on.
//!
//! Data flow: the listener asks [`ReloadingTls::server_config`] for each connection it accepts
//! (`tls_listener.rs`), and the peer transport and the etcd forwarder ask
//! [`OutboundTls::current`] for each connection they open. Either call first checks, at most
//! once per check interval ([`RELOAD_CHECK_INTERVAL`] in a node), whether the bytes of the
//! certificate, key or trusted-authority file have changed (three small reads; a modification
//! time can miss two writes within one clock tick); if so it parses them and builds the new
//! configuration, exactly as at start-up. A reload that fails
//! (a half-rotated pair whose key does not match the certificate, a file being rewritten, a
//! missing file) keeps the previous certificates in use and is logged; the next change of the
//! files is tried again. So rotating is: write the new files (ideally each by renaming a
//! complete file over the old one); new connections use them within about a second.
//!
//! Connections already open keep the certificates of their handshake, as in etcd: TLS checks a
//! certificate when a connection starts, not while it lasts. The `client_cert_auth` setting is
//! not read from a file and does not change.
//!
//! The reads run on the task that accepts or opens the connection, under the lock: three small
//! local files, at most once per interval, the same files the node read at start. Keep them on
//! a local disk (a hung network mount would hold up new connections, not open ones).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keel::tls::ClientTls;
use tokio::time::Instant;

use crate::tls::NodeTls;

/// How often a node looks at its certificate files, at most (only when it makes or accepts a
/// connection).
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One file's bytes, or nothing when it cannot be read (missing, say, halfway through a
/// rotation).
type Stamp = Option<Vec<u8>>;

/// A node's TLS, read again from its files when they change. Shared by the listener and the
/// node's outbound connections.
#[derive(Debug)]
pub struct ReloadingTls {
    check_interval: Duration,
    current: Mutex<Current>,
}

/// The TLS in use, and what its files held when it was read.
#[derive(Debug)]
struct Current {
    loaded: Loaded,
    stamps: Vec<Stamp>,
    checked_at: Instant,
}

/// A TLS ready for use: as read, and the listener's configuration built from it (plain builds).
#[derive(Debug)]
struct Loaded {
    tls: NodeTls,
    #[cfg(not(madsim))]
    server: Arc<rustls::ServerConfig>,
}

impl Loaded {
    /// `tls` with what it needs built; the error says what rustls refused.
    fn new(tls: NodeTls) -> Result<Self, String> {
        Ok(Self {
            #[cfg(not(madsim))]
            server: tls.server_config()?,
            tls,
        })
    }
}

impl ReloadingTls {
    /// Serves `tls`, looking at its files (when it was read from files) at most once per
    /// `check_interval`. The error says what rustls refused in `tls`.
    pub fn new(tls: NodeTls, check_interval: Duration) -> Result<Arc<Self>, String> {
        // The bytes first, then the TLS read from them again: files that change in between
        // differ from the bytes kept, and are read at the next check.
        let stamps = stamps_of(&tls);
        let tls = match tls.reread() {
            Some(reread) => reread.map_err(|error| error.to_string())?,
            None => tls,
        };
        let current = Current { loaded: Loaded::new(tls)?, stamps, checked_at: Instant::now() };
        Ok(Arc::new(Self { check_interval, current: Mutex::new(current) }))
    }

    /// The listener's rustls configuration for a connection accepted now.
    #[cfg(not(madsim))]
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.current().loaded.server)
    }

    /// The outbound settings, for the peer transport and the etcd forwarder.
    pub fn outbound(self: &Arc<Self>) -> OutboundTls {
        OutboundTls(Arc::clone(self))
    }

    /// The TLS in use, read again first if its files changed and a check is due.
    fn current(&self) -> MutexGuard<'_, Current> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(current.checked_at) >= self.check_interval {
            current.checked_at = now;
            reload_if_changed(&mut current);
        }
        current
    }
}

/// Reads the files of `current` again if any changed since they were last read.
fn reload_if_changed(current: &mut Current) {
    let stamps = stamps_of(&current.loaded.tls);
    if stamps == current.stamps {
        return;
    }
    // Remembered whatever comes of it: a failed reload is tried again when the files next change,
    // not at every check.
    current.stamps = stamps;
    let Some(reread) = current.loaded.tls.reread() else { return };
    match reread.map_err(|error| error.to_string()).and_then(Loaded::new) {
        Ok(loaded) => {
            current.loaded = loaded;
            metrics::counter!(crate::metrics::TLS_RELOADS_TOTAL).increment(1);
            tracing::info!("the TLS files changed: new connections use the new certificates");
        }
        Err(error) => {
            metrics::counter!(crate::metrics::TLS_RELOAD_FAILURES_TOTAL).increment(1);
            tracing::warn!("the TLS files changed but cannot be used, so the previous ones stay in use: {error}");
        }
    }
}

/// The bytes of the files `tls` was read from (none when it was not read from files).
fn stamps_of(tls: &NodeTls) -> Vec<Stamp> {
    tls.files().iter().map(|path| std::fs::read(path).ok()).collect()
}

/// How a node dials the other members over TLS: the current outbound settings of its
/// [`ReloadingTls`], taken for each new connection.
#[derive(Clone, Debug)]
pub struct OutboundTls(Arc<ReloadingTls>);

impl OutboundTls {
    /// The settings for a connection opened now: the trusted authorities, and the node's own
    /// certificate to show.
    pub fn current(&self) -> ClientTls {
        self.0.current().loaded.tls.outbound().clone()
    }
}

/// Two handles are equal when they share one node's TLS.
impl PartialEq for OutboundTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OutboundTls {}

#[cfg(all(test, not(madsim)))]
#[path = "../../tests/e2e/pki.rs"]
mod pki;

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// The files a node reads, in a directory of their own.
    struct LiveFiles {
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    }

    impl LiveFiles {
        fn in_dir(dir: &Path) -> Self {
            Self { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: dir.join("ca.pem") }
        }

        /// Replaces one file as operators should: a complete file renamed over the old one.
        fn replace(&self, live: &Path, source: &Path) {
            let staged = live.with_extension("new");
            std::fs::copy(source, &staged).expect("a staged copy");
            std::fs::rename(&staged, live).expect("renamed over the live file");
        }

        fn rotate_to(&self, pki: &pki::Pki) {
            self.replace(&self.cert, &pki.node_cert);
            self.replace(&self.key, &pki.node_key);
            self.replace(&self.ca, &pki.ca);
        }

        fn load(&self) -> NodeTls {
            NodeTls::from_files(&self.cert, &self.key, &self.ca, true).expect("the live files load")
        }
    }

    /// Two unrelated sets of certificates in `dir`, and live files holding the first.
    fn two_authorities(dir: &Path) -> (pki::Pki, pki::Pki, LiveFiles) {
        let made = ["a", "b", "live"].map(|name| {
            let path = dir.join(name);
            std::fs::create_dir(&path).unwrap();
            path
        });
        let (first, second) = (pki::Pki::create(&made[0]), pki::Pki::create(&made[1]));
        let live = LiveFiles::in_dir(&made[2]);
        live.rotate_to(&first);
        (first, second, live)
    }

    /// What a node built from `pki`'s files shows and trusts on its outbound connections.
    fn outbound_of(pki: &pki::Pki) -> ClientTls {
        let tls = NodeTls::from_files(&pki.node_cert, &pki.node_key, &pki.ca, true).expect("the test files load");
        tls.outbound().clone()
    }

    #[tokio::test]
    async fn changed_files_are_used_for_new_connections_and_a_broken_change_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, live) = two_authorities(dir.path());
        let reloading = ReloadingTls::new(live.load(), Duration::ZERO).expect("usable certificates");
        let outbound = reloading.outbound();
        assert_eq!(outbound.current(), outbound_of(&first));
        let served = reloading.server_config();
        assert!(Arc::ptr_eq(&served, &reloading.server_config()), "unchanged files are not read again");

        live.rotate_to(&second);
        assert_eq!(outbound.current(), outbound_of(&second), "the rotated files are in use");
        assert!(!Arc::ptr_eq(&served, &reloading.server_config()), "the listener serves the new certificate");

        // Half a rotation: the first certificate with the second key. Unusable: the second pair
        // stays in use, and the listener's configuration is not rebuilt.
        let served = reloading.server_config();
        live.replace(&live.cert, &first.node_cert);
        assert_eq!(outbound.current(), outbound_of(&second));
        assert!(Arc::ptr_eq(&served, &reloading.server_config()));
        // The key follows: the first pair is whole again, and used.
        live.replace(&live.key, &first.node_key);
        live.replace(&live.ca, &first.ca);
        assert_eq!(outbound.current(), outbound_of(&first));

        // A file gone halfway through a rotation is not a reason to stop serving.
        std::fs::remove_file(&live.ca).unwrap();
        assert_eq!(outbound.current(), outbound_of(&first));
    }

    #[tokio::test]
    async fn files_are_looked_at_once_per_check_interval_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second, live) = two_authorities(dir.path());
        let reloading = ReloadingTls::new(live.load(), Duration::from_secs(3_600)).expect("usable certificates");
        live.rotate_to(&second);
        assert_eq!(reloading.outbound().current(), outbound_of(&first), "not checked again within the interval");
    }

    #[test]
    fn a_tls_built_in_memory_has_no_files_to_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki::Pki::create(dir.path());
        let from_files = NodeTls::from_files(&pki.node_cert, &pki.node_key, &pki.ca, false).unwrap();
        assert_eq!(from_files.files().len(), 3);
        let identity = keel::tls::TlsIdentity::from_files(&pki.node_cert, &pki.node_key).unwrap();
        let in_memory = NodeTls::new(identity, ClientTls::from_files(&pki.ca, None, None).unwrap(), false);
        assert!(in_memory.files().is_empty() && in_memory.reread().is_none());
    }
}
