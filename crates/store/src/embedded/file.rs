//! The store file on disk: readable by its owner only (it holds the pin secret), and never
//! silently replaced.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::StoreError;

/// Owner read and write, nothing for anyone else.
const OWNER_ONLY: u32 = 0o600;

/// Makes `path` ready for redb: a new file is created owner-only; an existing one is made
/// owner-only; an existing *empty* file is refused, because redb would take it for a new store
/// and the history and pin secret the operator expects there would be gone without a word.
pub(super) fn prepare(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| StoreError::Unavailable {
        backend: "redb",
        detail: format!("cannot {what} {}: {e}", path.display()),
    };
    match fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::Corrupt {
            backend: "redb",
            detail: format!(
                "{} is empty (0 bytes): it is not a store, and opening it would start a new one in its place. \
                 If a fresh store is what you want, remove the file; otherwise restore it from a backup",
                path.display()
            ),
        }),
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(path, Permissions::from_mode(OWNER_ONLY)).map_err(|e| io("restrict", e))?;
                tracing::warn!(path = %path.display(), "the store file was readable by others; made it owner-only");
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(OWNER_ONLY)
            .open(path)
            .map(drop)
            .map_err(|e| io("create", e)),
        Err(e) => Err(io("read", e)),
    }
}
