//! The database file: opened (or created, atomically) with a bounded page cache, and the slot
//! that holds it open, where the writer reopens it after an I/O error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::Database;

use crate::StorageError;

/// redb's page cache (see [`open_database`]).
const CACHE_BYTES: usize = 16 << 20;

/// Opens the database file, or creates it when there is none. A file that is there is only ever
/// opened, never initialised: one that is empty (truncated) or not a redb database is refused, as
/// starting afresh over it would silently drop everything it held.
pub(crate) fn open_database(path: &Path) -> Result<Database, StorageError> {
    // redb caches 1 GiB of pages by default. Inner B-tree nodes fit in far less; message pages are
    // written once and read once (paged-out queues, recovery), so caching them only costs memory:
    // 16 MiB kept persistent throughput unchanged and a 200 MiB backlog under 50 MiB of RSS.
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => Err(StorageError::EmptyFile(path.to_owned())),
        Ok(_) => builder.open(path).map_err(|source| StorageError::Open {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_database(&builder, path),
        Err(source) => Err(StorageError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates the database at `path`, where there was none: initialised under a temporary name, then
/// renamed into place, so that a crash while creating it never leaves at `path` a partial file
/// that the next start would refuse.
fn create_database(builder: &redb::Builder, path: &Path) -> Result<Database, StorageError> {
    let fresh = path.with_extension("redb.new");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StorageError::Io { path, source }
    };
    match std::fs::remove_file(&fresh) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&fresh)(e)),
        _ => {}
    }
    let db = builder
        .create(&fresh)
        .map_err(|source| StorageError::Open {
            path: fresh.clone(),
            source,
        })?;
    std::fs::rename(&fresh, path).map_err(io(path))?;
    // The rename itself is made durable: the directory entry is what a restart looks for.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(db)
}

/// The open database, shared by the writer and readers. After an I/O error redb refuses every
/// further write until the database is closed and opened again; the writer does that here,
/// while readers see [`StorageError::Unavailable`] for the moment it takes.
pub(crate) struct DbSlot {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbSlot {
    /// The slot for `db`, opened from `path` (where [`DbSlot::reopen`] opens it again).
    pub(crate) fn new(path: PathBuf, db: Arc<Database>) -> DbSlot {
        DbSlot {
            path,
            db: RwLock::new(Some(db)),
        }
    }

    pub(crate) fn get(&self) -> Result<Arc<Database>, StorageError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StorageError::Unavailable)
    }

    /// Closes the database and opens it again. Waits (briefly) for readers to let go of it:
    /// the file stays locked while any handle lives.
    pub(crate) fn reopen(&self) -> Result<(), StorageError> {
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if Arc::strong_count(&old) > 1 {
                // Put it back rather than leak a second handle on the same file.
                *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(old);
                return Err(StorageError::Unavailable);
            }
            drop(old);
        }
        let db = open_database(&self.path)?;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(())
    }
}
