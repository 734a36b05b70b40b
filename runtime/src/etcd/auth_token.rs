//! The secrets of etcd authentication: password hashes, the tokens `Authenticate` hands out,
//! and the random bytes both need.
//!
//! * **Password hashes** are PBKDF2-HMAC-SHA256 with a random 16-byte salt, computed by the
//!   member that receives `UserAdd` or `UserChangePassword` before it proposes the change: only
//!   the hash travels through the log and sits in the store (core's `AuthUser::password_hash`).
//!   Layout: `version:u8(=1) iterations:u32le salt:[u8;16] derived:[u8;32]`. A hash records its
//!   iteration count, so changing the setting affects new passwords only.
//! * **Tokens** are signed, not stored: `keel1.<hex user>.<hex credential>.<expiry ms>.<hex mac>`,
//!   the MAC an HMAC-SHA256 of everything before it under the cluster's token key (a random key
//!   that `AuthEnable` puts in the replicated auth table). Any member can therefore check a
//!   token another member issued: clients need not stick to one member, unlike etcd's simple
//!   tokens. The credential is a digest of the user's password hash ([`credential_of`]): a new
//!   password, or deleting and adding the user again, ends the user's tokens, as etcd drops a
//!   user's simple tokens then. Re-enabling authentication draws a new key and ends them all.
//! * **Randomness** comes from the operating system (ring's `SystemRandom`), and under
//!   `--cfg madsim` from the simulator's seeded generator, so a simulated run is reproducible.
//!
//! Hashing is slow on purpose (tens of milliseconds): it runs away from the async workers
//! (`spawn_blocking`), at most [`HASHES_IN_FLIGHT_MAX`] at once.

use std::num::NonZeroU32;

use bytes::{BufMut, Bytes};
use ring::{hmac, pbkdf2};

/// Metadata key of the token in etcd's gRPC calls.
pub(crate) const TOKEN_METADATA: &str = "token";
/// Prefix and version of Keel's token format.
const TOKEN_PREFIX: &str = "keel1";
/// Longest token accepted: a 256-byte user name in hex and four short fields.
pub(crate) const TOKEN_CHARS_MAX: usize = 1024;
/// Bytes of a password salt.
const SALT_BYTES: usize = 16;
/// Bytes of a derived password key.
const DERIVED_BYTES: usize = 32;
/// Format version of a stored password hash.
const HASH_VERSION: u8 = 1;
/// Most PBKDF2 iterations a password hash may use (the `auth_password_iterations` setting's
/// bound): bounds the cost of one `Authenticate`.
pub const HASH_ITERATIONS_MAX: u32 = 10_000_000;
/// Password hashes computed at once on a node; more wait their turn.
pub(crate) const HASHES_IN_FLIGHT_MAX: usize = 2;
/// Bytes of the cluster's token key.
pub(crate) const TOKEN_KEY_BYTES: usize = 32;

/// Bytes of a token's credential digest.
const CREDENTIAL_BYTES: usize = 8;

/// What a token says: who, with which password, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The authenticated user.
    pub user: String,
    /// [`credential_of`] the user's password hash when the token was issued.
    pub credential: [u8; CREDENTIAL_BYTES],
    /// Wall-clock time (ms since the Unix epoch) after which the token is refused.
    pub expires_at_ms: u64,
}

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not a token of this format, or too long.
    Malformed,
    /// The signature does not match the cluster's token key.
    BadSignature,
    /// Its time is up.
    Expired,
}

/// The token for `claims`, signed with `key`.
pub(crate) fn mint(key: &[u8], claims: &Claims) -> String {
    let body =
        format!("{TOKEN_PREFIX}.{}.{}.{}", hex(claims.user.as_bytes()), hex(&claims.credential), claims.expires_at_ms);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body.as_bytes());
    format!("{body}.{}", hex(tag.as_ref()))
}

/// The claims of `token` if `key` signed it and it has not expired at `now_wall_ms`.
pub(crate) fn verify(key: &[u8], token: &str, now_wall_ms: u64) -> Result<Claims, TokenError> {
    if token.len() > TOKEN_CHARS_MAX {
        return Err(TokenError::Malformed);
    }
    let (body, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mac = unhex(mac).ok_or(TokenError::Malformed)?;
    let mut fields = body.split('.');
    let (Some(TOKEN_PREFIX), Some(user), Some(credential), Some(expiry), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(TokenError::Malformed);
    };
    let user = unhex(user).and_then(|bytes| String::from_utf8(bytes).ok()).ok_or(TokenError::Malformed)?;
    let credential = unhex(credential).and_then(|bytes| bytes.try_into().ok()).ok_or(TokenError::Malformed)?;
    let expires_at_ms: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), body.as_bytes(), &mac)
        .map_err(|_| TokenError::BadSignature)?;
    if now_wall_ms >= expires_at_ms {
        return Err(TokenError::Expired);
    }
    Ok(Claims { user, credential, expires_at_ms })
}

/// The digest of a stored password hash that a token carries: it changes whenever the password
/// does (each hash has its own random salt).
pub(crate) fn credential_of(password_hash: &[u8]) -> [u8; CREDENTIAL_BYTES] {
    let digest = ring::digest::digest(&ring::digest::SHA256, password_hash);
    let mut credential = [0u8; CREDENTIAL_BYTES];
    credential.copy_from_slice(&digest.as_ref()[..CREDENTIAL_BYTES]);
    credential
}

/// The stored hash of `password`: PBKDF2-HMAC-SHA256, `iterations` rounds, under `salt`.
pub(crate) fn hash_password(password: &str, iterations: NonZeroU32, salt: [u8; SALT_BYTES]) -> Bytes {
    let mut derived = [0u8; DERIVED_BYTES];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), &mut derived);
    let mut out = Vec::with_capacity(1 + 4 + SALT_BYTES + DERIVED_BYTES);
    out.put_u8(HASH_VERSION);
    out.put_u32_le(iterations.get());
    out.put_slice(&salt);
    out.put_slice(&derived);
    Bytes::from(out)
}

/// Whether `password` matches the stored hash (in constant time). A hash of another format,
/// or asking for more than [`HASH_ITERATIONS_MAX`] rounds, matches nothing.
pub(crate) fn password_matches(stored: &[u8], password: &str) -> bool {
    let [HASH_VERSION, i0, i1, i2, i3, rest @ ..] = stored else { return false };
    if rest.len() != SALT_BYTES + DERIVED_BYTES {
        return false;
    }
    let iterations = u32::from_le_bytes([*i0, *i1, *i2, *i3]);
    let Some(iterations) = NonZeroU32::new(iterations).filter(|n| n.get() <= HASH_ITERATIONS_MAX) else {
        return false;
    };
    let (salt, derived) = rest.split_at(SALT_BYTES);
    pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password.as_bytes(), derived).is_ok()
}

/// `N` random bytes: from the operating system, or from the simulator's seeded generator.
#[cfg(not(madsim))]
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], tonic::Status> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| tonic::Status::internal("etcdserver: the operating system gave no random bytes; retry"))?;
    Ok(out)
}

/// `N` random bytes: from the operating system, or from the simulator's seeded generator.
#[cfg(madsim)]
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], tonic::Status> {
    Ok(std::array::from_fn(|_| madsim::rand::random::<u8>()))
}

/// Runs a password hash computation away from the async workers (a simulated task under madsim,
/// which has no threads). A computation that never ran (the runtime is shutting down) is etcd's
/// "server stopped", not a panic of the request's task.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tonic::Status> {
    #[cfg(not(madsim))]
    let done = tokio::task::spawn_blocking(work).await;
    #[cfg(madsim)]
    let done = tokio::spawn(async move { work() }).await;
    done.map_err(|error| {
        tracing::warn!("a password hash computation did not finish: {error}");
        super::errors::status(super::errors::STOPPED)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims { user: "alice".into(), credential: [7; CREDENTIAL_BYTES], expires_at_ms: 1_000 }
    }

    #[test]
    fn a_token_carries_its_claims_until_it_expires() {
        let token = mint(KEY, &claims());
        assert!(token.starts_with("keel1.616c696365.0707070707070707.1000."), "{token}");
        assert_eq!(verify(KEY, &token, 999), Ok(claims()));
        assert_eq!(verify(KEY, &token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_changed_or_foreign_token_is_refused() {
        let token = mint(KEY, &claims());
        assert_eq!(verify(b"another key", &token, 0), Err(TokenError::BadSignature));
        let extended = token.replace(".1000.", ".9000.");
        assert_eq!(verify(KEY, &extended, 0), Err(TokenError::BadSignature));
        let renamed = token.replace("616c696365", "726f6f74");
        assert_eq!(verify(KEY, &renamed, 0), Err(TokenError::BadSignature));
        let short_credential = "keel1.61.07.1000.00";
        for garbage in ["", "keel1", "simple.token.42", "keel1.zz.7.1000.00", short_credential, &"a".repeat(2_000)] {
            assert_eq!(verify(KEY, garbage, 0), Err(TokenError::Malformed), "{garbage:.40}");
        }
        let extra = format!("keel1.61.0707070707070707.2.3.{}", "00".repeat(32));
        assert_eq!(verify(KEY, &extra, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn a_password_matches_its_hash_only() {
        let iterations = NonZeroU32::new(1_000).expect("not zero");
        let hash = hash_password("s3cret", iterations, [7; SALT_BYTES]);
        assert!(password_matches(&hash, "s3cret"));
        assert!(!password_matches(&hash, "s3cret "));
        assert!(!password_matches(&hash, ""));
        let other_salt = hash_password("s3cret", iterations, [8; SALT_BYTES]);
        assert_ne!(hash, other_salt, "the salt changes the hash");
        assert!(!password_matches(&hash[..hash.len() - 1], "s3cret"), "a truncated hash matches nothing");
        let mut greedy = hash.to_vec();
        greedy[1..5].copy_from_slice(&(HASH_ITERATIONS_MAX + 1).to_le_bytes());
        assert!(!password_matches(&greedy, "s3cret"), "a hash asking for too many rounds matches nothing");
        assert!(!password_matches(b"", ""), "no hash (a user without password) matches nothing");
    }

    #[test]
    fn a_new_password_gives_a_new_credential() {
        let iterations = NonZeroU32::new(1_000).expect("not zero");
        let first = hash_password("pw", iterations, [1; SALT_BYTES]);
        let again = hash_password("pw", iterations, [2; SALT_BYTES]);
        assert_eq!(credential_of(&first), credential_of(&first));
        assert_ne!(credential_of(&first), credential_of(&again), "the same password, salted anew");
    }

    #[test]
    fn random_bytes_differ() {
        let (a, b) = (random_bytes::<16>().expect("random"), random_bytes::<16>().expect("random"));
        assert_ne!(a, b);
    }
}
