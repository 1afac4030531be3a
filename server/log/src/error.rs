//! The engine reports failures as the contract's [`Error`]; this module turns
//! RocksDB's errors into it.

pub use eventbus_broker::error::{Error, Result};

/// A RocksDB error as the contract's error. Damage is DATA_LOSS for the
/// caller ([`Error::StorageCorruption`]), never a retryable storage error.
pub(crate) fn storage(e: rocksdb::Error) -> Error {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => Error::StorageCorruption(e.into_string()),
        _ => Error::Storage(e.into_string()),
    }
}

/// Whether a RocksDB error means the disk (or the space RocksDB may use) is
/// full. The C API reports only the message, e.g. "IO error: No space left on
/// device: While appending to file: ..." or "...: Max allowed space was reached".
pub(crate) fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device")
        || message.contains("NoSpace")
        || message.contains("Max allowed space was reached")
}
