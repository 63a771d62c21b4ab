//! The engine's one error enum. Each variant maps to the gRPC status code and the exact
//! message etcd 3.4 sends (etcdserver/api/v3rpc/rpctypes/error.go), because etcd clients
//! match on those strings.

/// gRPC status codes used by the engine's errors (numbering as in the gRPC spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    /// 3
    InvalidArgument = 3,
    /// 5
    NotFound = 5,
    /// 9
    FailedPrecondition = 9,
    /// 11
    OutOfRange = 11,
    /// 15
    DataLoss = 15,
}

/// Everything the engine can refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request named an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn has more compares, success ops or failure ops than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes the same key twice (puts, or a put inside a deleted range).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read, watch, hash or compaction asked for a revision below the compact revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read, hash or compaction asked for a revision above the current one.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The lease does not exist (expired, revoked or never granted).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant named a lease id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asked for a TTL above [`crate::LEASE_TTL_SECONDS_MAX`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A snapshot's bytes failed validation; says where.
    #[error("corekv: snapshot is corrupt: {0}")]
    CorruptSnapshot(String),
}

impl Error {
    /// The gRPC status code etcd answers this error with.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey => GrpcCode::InvalidArgument,
            Error::Compacted | Error::FutureRevision | Error::LeaseTtlTooLarge => {
                GrpcCode::OutOfRange
            }
            Error::LeaseNotFound => GrpcCode::NotFound,
            Error::LeaseExists => GrpcCode::FailedPrecondition,
            Error::CorruptSnapshot(_) => GrpcCode::DataLoss,
        }
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;
