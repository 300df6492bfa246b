//! The SQLite database file is created private (mode 0600), like the admin
//! token and the master key beside it: it holds sealed gateway secrets, API
//! key hashes and every customer's data.
//!
//! Why this suffices for its `-wal` and `-shm` files: SQLite creates them
//! with the permission bits of the database file and sets them explicitly
//! (`fchmod`), whatever the process umask, so a private database file gets
//! private companions. Changing the process umask instead would also affect
//! every other file the process creates, and could not be undone safely in a
//! multi-threaded process.

use std::path::Path;

use super::StoreError;

/// Create the database file of the SQLite `url` with mode 0600 unless it
/// exists. Only for URLs that let SQLite create the file (`mode=rwc`): with
/// `ro`/`rw` a missing file must stay an error.
pub(crate) fn create_private_sqlite_file(url: &str) -> Result<(), StoreError> {
    if !url.contains("mode=rwc") {
        return Ok(());
    }
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().map_err(StoreError::Connect)?;
    create_private(options.get_filename()).map_err(|e| StoreError::Connect(sqlx::Error::Io(e)))
}

fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::store::Store;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .expect("file exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[tokio::test]
    async fn database_wal_and_shm_are_private_whatever_the_umask() {
        let dir = std::env::temp_dir().join(format!("payhost-mode-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("payhost.db");
        let store = Store::connect_and_migrate(&crate::store::sqlite_file_url(&db))
            .await
            .expect("store");
        // A write, so the WAL and the shared-memory index exist.
        crate::store::testing::tenant(&store, "Mode test").await;
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.join(format!("payhost.db{suffix}"));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
