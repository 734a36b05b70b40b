//! Errors of the key-value store: [`KvError`] for requests that cannot be served (checked before
//! proposing, or reads at an unavailable revision), [`KvDecodeError`] for malformed command
//! bytes and [`KvSnapshotError`] for a snapshot that must not be installed. Every message says
//! what is wrong and what to do.

/// Why a key-value request is refused: by [`super::validate`] before it is proposed, by a read at
/// a revision that is not available, or by a command when it is applied (a
/// [`super::KvCommand::Compact`], a transaction or lease command, an auth command, an
/// [`super::KvCommand::Authorized`] checked at an old auth revision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// A key that must be given is empty.
    EmptyKey,
    /// A key is longer than the limit.
    KeyTooLarge {
        /// Size of the key in bytes.
        size: usize,
        /// `KvLimits::key_bytes_max`.
        max: usize,
    },
    /// A value is longer than the limit.
    ValueTooLarge {
        /// Size of the value in bytes.
        size: usize,
        /// `KvLimits::value_bytes_max`.
        max: usize,
    },
    /// A transaction has too many compares or operations in one of its lists.
    TooManyTxnOps {
        /// Which list: `"compares"`, `"success"` or `"failure"`.
        list: &'static str,
        /// How many it has.
        count: usize,
        /// `KvLimits::txn_ops_max`.
        max: usize,
    },
    /// The encoded command is larger than the limit.
    CommandTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// `KvLimits::command_bytes_max`.
        max: usize,
    },
    /// A time to live of zero was given.
    ZeroTtl,
    /// Transactions are nested deeper than [`super::TXN_NESTING_MAX`].
    TxnTooDeep {
        /// The limit.
        max: usize,
    },
    /// A transaction puts a key "with its current value" ([`super::TxnOp::PutSameValue`]) but
    /// the key does not exist: the whole transaction is refused when applied.
    KeyNotFound,
    /// The lease named does not exist (never granted, revoked or expired).
    LeaseNotFound,
    /// A lease with the id asked for exists already.
    LeaseExists,
    /// The requested revision was compacted away.
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The store's compacted revision.
        compacted: u64,
    },
    /// The requested revision is not reached yet.
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's current revision.
        current: u64,
    },
    /// A `NoSpace` alarm is raised: commands that grow the store are refused when applied.
    NoSpace,
    /// Auth cannot be enabled: there is no user [`super::ROOT`].
    AuthRootUserMissing,
    /// Auth cannot be enabled: user [`super::ROOT`] does not hold role [`super::ROOT`].
    AuthRootRoleMissing,
    /// A user with this name exists already.
    AuthUserExists,
    /// The user named does not exist.
    AuthUserNotFound,
    /// A role with this name exists already.
    AuthRoleExists,
    /// The role named does not exist.
    AuthRoleNotFound,
    /// The user does not hold the role to revoke.
    AuthRoleNotGranted,
    /// The role has no permission on exactly the range to revoke.
    AuthPermissionNotGranted,
    /// The change would leave enabled auth without its administrator: deleting user
    /// [`super::ROOT`] or role [`super::ROOT`], or revoking role root from user root, while auth
    /// is enabled.
    AuthInvalidManagement,
    /// A [`super::KvCommand::Authorized`] was checked against an auth table that has changed
    /// since (auth is enabled with another revision): refused as a whole when applied.
    AuthOldRevision,
    /// A user or role to add has an empty name.
    AuthEmptyName {
        /// `"user"` or `"role"`.
        what: &'static str,
    },
    /// A user or role name is longer than [`super::AUTH_NAME_BYTES_MAX`].
    AuthNameTooLarge {
        /// Size of the name in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A password hash is longer than [`super::AUTH_HASH_BYTES_MAX`], or a token signing key
    /// longer than [`super::AUTH_TOKEN_KEY_BYTES_MAX`].
    AuthHashTooLarge {
        /// Size of the hash or key in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The auth table holds the most users, roles, permissions of a role or roles of a user
    /// allowed (bounds in `auth.rs`): refused when applied.
    AuthLimit {
        /// `"users"`, `"roles"`, `"permissions per role"` or `"roles per user"`.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// A [`super::KvCommand::Authorized`] wraps another one (never allowed).
    NestedAuthorized,
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EmptyKey => write!(f, "the key is empty; give a key of at least one byte"),
            Self::KeyTooLarge { size, max } => {
                write!(f, "the key is {size} bytes, above the limit of {max} bytes; use a shorter key")
            }
            Self::ValueTooLarge { size, max } => {
                write!(f, "the value is {size} bytes, above the limit of {max} bytes; split it or store it elsewhere")
            }
            Self::TooManyTxnOps { list, count, max } => write!(
                f,
                "the transaction has {count} {list}, above the limit of {max}; split it into smaller transactions"
            ),
            Self::CommandTooLarge { size, max } => {
                write!(f, "the request is {size} bytes encoded, above the limit of {max} bytes; split it")
            }
            Self::ZeroTtl => write!(f, "a time to live of 0 was given; give none for a key that never expires"),
            Self::TxnTooDeep { max } => {
                write!(f, "transactions are nested more than {max} deep; flatten the transaction")
            }
            Self::LeaseNotFound => write!(f, "the lease does not exist (never granted, revoked or expired)"),
            Self::LeaseExists => write!(f, "a lease with this id exists already; grant another id or 0"),
            Self::KeyNotFound => {
                write!(f, "the key to put with its current value does not exist; put it with a value first")
            }
            Self::Compacted { requested, compacted } => write!(
                f,
                "revision {requested} has been compacted (compacted revision {compacted}); \
                 read at {compacted} or later"
            ),
            Self::NoSpace => write!(
                f,
                "the store is out of space (a NOSPACE alarm is raised); delete or compact, then clear the alarm"
            ),
            Self::FutureRevision { requested, current } => write!(
                f,
                "revision {requested} is in the future (current revision {current}); \
                 read at {current} or earlier, or retry later"
            ),
            Self::AuthRootUserMissing
            | Self::AuthRootRoleMissing
            | Self::AuthUserExists
            | Self::AuthUserNotFound
            | Self::AuthRoleExists
            | Self::AuthRoleNotFound
            | Self::AuthRoleNotGranted
            | Self::AuthPermissionNotGranted
            | Self::AuthInvalidManagement
            | Self::AuthOldRevision
            | Self::AuthEmptyName { .. }
            | Self::AuthNameTooLarge { .. }
            | Self::AuthHashTooLarge { .. }
            | Self::AuthLimit { .. }
            | Self::NestedAuthorized => self.fmt_auth(f),
        }
    }
}

impl KvError {
    /// The messages of the auth errors (`fmt` sends only those here).
    fn fmt_auth(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Self::AuthRootUserMissing => {
                "auth cannot be enabled without a user 'root'; add user root, grant it role root, retry"
            }
            Self::AuthRootRoleMissing => {
                "auth cannot be enabled: user 'root' does not hold role 'root'; grant it, then retry"
            }
            Self::AuthUserExists => "the user exists already; choose another name or delete it first",
            Self::AuthUserNotFound => "the user does not exist; check the name or add the user first",
            Self::AuthRoleExists => "the role exists already; choose another name or delete it first",
            Self::AuthRoleNotFound => "the role does not exist; check the name or add the role first",
            Self::AuthRoleNotGranted => "the user does not hold this role; there is nothing to revoke",
            Self::AuthPermissionNotGranted => {
                "the role has no permission on exactly this range; revoke the range exactly as it was granted"
            }
            Self::AuthInvalidManagement => {
                "while auth is enabled, user 'root', role 'root' and root's role 'root' cannot be removed; \
                 disable auth first"
            }
            Self::AuthOldRevision => {
                "the auth table changed after the request was checked against it; check it again and retry"
            }
            Self::AuthEmptyName { what } => {
                return write!(f, "the {what} name is empty; give a name of at least one byte")
            }
            Self::AuthNameTooLarge { size, max } => {
                return write!(f, "the name is {size} bytes, above the limit of {max} bytes; use a shorter name")
            }
            Self::AuthHashTooLarge { size, max } => {
                return write!(
                    f,
                    "the password hash or token key is {size} bytes, above the limit of {max} bytes; use a shorter one"
                )
            }
            Self::AuthLimit { what, max } => {
                return write!(
                    f,
                    "the auth table already holds the most {what} allowed ({max}); remove some before adding more"
                )
            }
            Self::NestedAuthorized => {
                "an authorized command wraps another authorized command; wrap the inner command only once"
            }
            other => return write!(f, "{other:?}"), // not an auth error: `fmt` never sends one
        };
        f.write_str(text)
    }
}

impl std::error::Error for KvError {}

/// Why command bytes could not be decoded. Offsets count bytes from the start of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvDecodeError {
    /// The input ends inside a field.
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// The format version byte is not one this build reads.
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A tag byte (command kind, operation kind, option marker...) has no meaning.
    UnknownTag {
        /// The field being read.
        field: &'static str,
        /// Where the tag is.
        offset: usize,
        /// The tag found.
        tag: u8,
    },
    /// A list claims more items than the remaining bytes could hold.
    TooManyItems {
        /// The list being read.
        field: &'static str,
        /// Where its count is.
        offset: usize,
        /// The claimed count.
        count: u64,
    },
    /// Transactions are nested deeper than [`super::TXN_NESTING_MAX`].
    TooDeep {
        /// Where the too deeply nested transaction starts.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// A name (user or role) is not valid UTF-8.
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
        /// Where the string (its length) starts.
        offset: usize,
    },
    /// A [`super::KvCommand::Authorized`] wraps another one.
    NestedAuthorized {
        /// Where the inner command's tag is.
        offset: usize,
    },
    /// Bytes are left after a complete value.
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        count: usize,
    },
}

impl std::fmt::Display for KvDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated { field, offset, needed, remaining } => {
                write!(f, "truncated input: {field} at byte {offset} needs {needed} bytes but {remaining} are left")
            }
            Self::UnsupportedVersion { version } => {
                write!(f, "unsupported format version {version}; it was written by a newer or foreign program")
            }
            Self::UnknownTag { field, offset, tag } => write!(f, "unknown {field} tag {tag} at byte {offset}"),
            Self::TooManyItems { field, offset, count } => {
                write!(f, "{field} at byte {offset} claims {count} items, more than the remaining bytes can hold")
            }
            Self::TooDeep { offset, max } => {
                write!(f, "the transaction at byte {offset} is nested more than {max} deep")
            }
            Self::InvalidUtf8 { field, offset } => write!(f, "{field} at byte {offset} is not valid UTF-8"),
            Self::NestedAuthorized { offset } => {
                write!(f, "the authorized command at byte {offset} wraps another authorized command")
            }
            Self::TrailingBytes { offset, count } => {
                write!(f, "{count} unexpected bytes after the end of the value at byte {offset}")
            }
        }
    }
}

impl std::error::Error for KvDecodeError {}

/// Why a snapshot was refused by [`super::KvStore::restore`]. Nothing is installed; fetch the
/// snapshot again from a healthy peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvSnapshotError {
    /// Shorter than the fixed header and checksum.
    TooShort {
        /// Its size in bytes.
        size: usize,
    },
    /// The first bytes are not the key-value snapshot magic.
    BadMagic,
    /// The format version byte is not one this build reads.
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The CRC32 over the content does not match the stored one: the data is corrupt.
    ChecksumMismatch {
        /// The checksum stored in the snapshot.
        stored: u32,
        /// The checksum of the content.
        computed: u32,
    },
    /// The content cannot be parsed.
    Malformed(KvDecodeError),
    /// The content parses but breaks an invariant of the store.
    Inconsistent(String),
}

impl std::fmt::Display for KvSnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let advice = "the snapshot is not installed; fetch it again from a healthy peer";
        match self {
            Self::TooShort { size } => write!(f, "key-value snapshot of {size} bytes is too short; {advice}"),
            Self::BadMagic => write!(f, "not a key-value snapshot (bad magic bytes); {advice}"),
            Self::UnsupportedVersion { version } => write!(
                f,
                "key-value snapshot format version {version} is not supported by this build; \
                 upgrade this node or take the snapshot on a node of the same version"
            ),
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                "key-value snapshot is corrupt: stored CRC32 {stored:#010x}, computed {computed:#010x}; {advice}"
            ),
            Self::Malformed(error) => write!(f, "key-value snapshot is malformed: {error}; {advice}"),
            Self::Inconsistent(what) => write!(f, "key-value snapshot is inconsistent: {what}; {advice}"),
        }
    }
}

impl std::error::Error for KvSnapshotError {}

impl From<KvDecodeError> for KvSnapshotError {
    fn from(error: KvDecodeError) -> Self {
        Self::Malformed(error)
    }
}
