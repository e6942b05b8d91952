//! The durable store: everything clawpen must remember across restarts, in one sled database.
//!
//! This is the only module that touches sled; the rest of the daemon sees plain records and
//! [`StoreError`]. Values are JSON, so a store can be inspected with a dump and a text editor
//! and a record type can gain optional fields without a migration.
//!
//! # Layout
//! One sled tree per kind of record, each handled by the submodule named after it:
//! - `meta`: the format version and this installation's instance id (here).
//! - `conversations`: [`ConversationRecord`] by conversation key text (`conversation`).
//! - `inbound`: [`StoredInbound`] by (conversation, arrival sequence): the inbound log, in
//!   arrival order per conversation (`inbound`).
//! - `inbound_ids`: arrival sequence by (conversation, platform message id): the dedupe index.
//! - `turns`: [`TurnRecord`] by conversation key text, at most one per conversation (`turn`).
//! - `turn_text`: the reply text of running turns, chunk by chunk, by (conversation, turn,
//!   box event seq) (`text`).
//! - `deliveries`: [`DeliveryRecord`] by (conversation, turn): the platform messages of a
//!   reply, and the final text of a finished turn not yet fully shown (`delivery`).
//! - `cursors`: each adapter's platform cursor, e.g. the Telegram offset (`cursor`).
//! - `tasks`, `task_due`, `task_conv`, `task_zones`: scheduled tasks and their due-time
//!   index (`task`), their index by conversation and each conversation's time zone
//!   (`task_conversation`).
//!
//! [`StoreError`] (in `error`) is the one error type of all of it.
//!
//! # Durability
//! A write that recovery depends on (an inbound message, a state change, a turn's delivery
//! state, a cursor) is flushed before the call returns, so whatever the caller acknowledges
//! next (the platform cursor, a message sent) never gets ahead of the disk. Every call
//! blocks on disk I/O; async callers accept that short block or use `spawn_blocking`.
//! The hot writes (accepting a message, a reply's progress, a turn's start and end) have
//! `_unflushed` forms for [`Store::submit`]/[`Store::commit`] (`commit`): one thread applies
//! whatever is queued and flushes once for all of it.
//!
//! Records of earlier releases read back: `upgrade` tests every entry of a store written
//! by the last release; what the platform shows of a reply is the store's own
//! [`ShownReply`] (`shown`), not the streaming code's type.
//!
//! What "flushed" guarantees is sled's: sled 0.34 makes a flush stable with
//! `sync_file_range` (the written range reaches the device), which survives a crash of the
//! process or the kernel; the `fsync` that also commits file metadata and the drive's cache
//! comes from sled's flusher thread every 500 ms, so a power loss may lose up to that much.
//! A write that fails (a full disk) closes the database until it can be opened again
//! (`health`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use clawpen_domain::ConversationKey;
use serde::de::DeserializeOwned;
use serde::Serialize;

mod accept;
mod commit;
mod conversation;
mod cursor;
mod delivery;
mod error;
mod health;
mod inbound;
mod shown;
mod task;
mod task_conversation;
mod text;
mod turn;
mod update;
#[cfg(test)]
mod upgrade;

pub use commit::Pending;
pub use delivery::DeliveryRecord;
pub use error::StoreError;
pub use inbound::{InboundState, InsertOutcome, StoredInbound};
pub use task::{CatchUp, StoredSchedule, TaskKind, TaskRecord, TaskState};
pub use turn::TurnRecord;

/// The on-disk format this build reads and writes. Bump it when a record's meaning changes
/// incompatibly; a store with another version is refused with [`StoreError::Incompatible`]
/// instead of being misread.
pub const FORMAT_VERSION: u32 = 1;

/// How long opening waits for a store lock to be released before reporting it as held by
/// another process.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `meta` key of the format version (a JSON number).
const FORMAT_VERSION_KEY: &[u8] = b"format_version";
/// `meta` key of the instance id (a JSON string).
const INSTANCE_ID_KEY: &[u8] = b"instance_id";

/// The handle to the open store. Clones are cheap and share one database, so every part of
/// the daemon can hold its own.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What every handle shares: the store's identity, and the open database when it can be
/// trusted (see [`health`]).
struct Inner {
    path: PathBuf,
    instance_id: String,
    /// The open database; `None` after a write failed, until it is opened again. A std
    /// lock held only to clone or replace the handle.
    trees: RwLock<Option<Arc<Trees>>>,
    /// Whether writes fail now, since when, and when to try opening again.
    health: Mutex<health::Health>,
    /// The group-commit thread's queue, started by the first commit (`None` if no thread
    /// could be started: commits then write directly).
    committer: OnceLock<Option<commit::Committer>>,
    /// Flushes that succeeded since the store was opened.
    flushes: AtomicU64,
}

/// The database and its trees; sled trees are themselves shared handles.
struct Trees {
    db: sled::Db,
    conversations: sled::Tree,
    inbound: sled::Tree,
    inbound_ids: sled::Tree,
    turns: sled::Tree,
    turn_text: sled::Tree,
    deliveries: sled::Tree,
    cursors: sled::Tree,
    tasks: sled::Tree,
    task_due: sled::Tree,
    task_conv: sled::Tree,
    task_zones: sled::Tree,
}

/// A handle that does not keep the store open: it tells how many handles still do, for
/// a caller that closed its own and waits for the store to be free (an in-process restart).
#[derive(Clone)]
pub struct WeakStore(Weak<Inner>);

impl WeakStore {
    /// How many [`Store`] handles are alive; the database closes after the last one goes.
    pub fn handles(&self) -> usize {
        self.0.strong_count()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A handle that does not keep the store open.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// Opens the store in `dir`, creating it (and the directory) on first use.
    ///
    /// Refuses, with an error naming the path, a store another process holds
    /// ([`StoreError::Locked`]), one whose files cannot be read ([`StoreError::Corrupt`]) and
    /// one written in another format ([`StoreError::Incompatible`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let (trees, instance_id) = open_trees(dir, Some(LOCK_WAIT))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                instance_id,
                trees: RwLock::new(Some(Arc::new(trees))),
                health: Mutex::new(health::Health::default()),
                committer: OnceLock::new(),
                flushes: AtomicU64::new(0),
            }),
        })
    }

    /// The store's directory, for messages and for the `status` command.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This installation's id: 16 random hex characters made on the store's first open and
    /// kept since. Container labels carry it, so two clawpen installations sharing a Docker
    /// engine never adopt or remove each other's boxes.
    pub fn instance_id(&self) -> String {
        self.inner.instance_id.clone()
    }

    /// Runs store work on tokio's blocking pool. A flushed write waits for the disk, which
    /// must not stall the async workers that every conversation shares.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| StoreError::Db(format!("store task failed: {e}")))?
    }

    /// Writes everything stored so far to disk. The writes that recovery depends on already
    /// flush; this is for the rest (e.g. [`Store::touch_conversation`]) at shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db()?.db.flush().map_err(|e| self.sled_err(e))?;
        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many flushes succeeded since the store was opened: each is one wait for the
    /// disk, which is what a message's way to its box is measured in.
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// Converts a sled error of this store; an I/O error means the open database can no
    /// longer be trusted (see [`health`]).
    fn sled_err(&self, error: sled::Error) -> StoreError {
        self.failed(StoreError::from_sled(&self.inner.path, error))
    }

    /// Converts the error of a transaction of this store.
    fn tx_err(&self, error: sled::transaction::TransactionError<StoreError>) -> StoreError {
        self.failed(StoreError::from_transaction(&self.inner.path, error))
    }

    /// Decodes one record, naming where it was found if it cannot be read.
    fn decode<T: DeserializeOwned>(
        &self,
        tree: &str,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        decode(&self.inner.path, tree, key, bytes)
    }

    /// Decodes one record of a scan; an unreadable one is logged and skipped, so that one
    /// damaged record costs that record and not every conversation listed with it.
    fn decode_or_skip<T: DeserializeOwned>(
        &self,
        tree: &str,
        key: &[u8],
        bytes: &[u8],
    ) -> Option<T> {
        match self.decode(tree, key, bytes) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(store = %self.inner.path.display(), %error, "skipping unreadable record");
                None
            }
        }
    }
}

/// Opens sled in `dir` and its trees; returns them with the instance id. Waits up to
/// `lock_wait` for a lock that a store just closed in this process still holds.
fn open_trees(
    dir: &Path,
    lock_wait: Option<std::time::Duration>,
) -> Result<(Trees, String), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::io(dir, source))?;
    // If sled's files were there but the format version (written and flushed on the
    // first open) is not, sled skipped over damage, and the store must not quietly
    // restart empty. (A crash inside the very first open, between sled creating its
    // files and that flush, looks the same; such a store holds nothing yet.)
    let existed =
        dir.join("conf").exists() || std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0);
    let config = sled::Config::new().path(dir);
    let deadline = std::time::Instant::now() + lock_wait.unwrap_or_default();
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(error) => match StoreError::opening(dir, error) {
                // A store just closed in this process keeps its lock until sled's
                // background thread has finished; another process keeps it for good.
                StoreError::Locked { .. } if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return Err(other),
            },
        }
    };
    let sled_err = |e| StoreError::from_sled(dir, e);
    let meta = db.open_tree("meta").map_err(sled_err)?;
    check_format_version(dir, &meta, existed)?;
    let instance_id = instance_id(dir, &meta)?;
    db.flush().map_err(sled_err)?;
    let trees = Trees {
        conversations: db.open_tree("conversations").map_err(sled_err)?,
        inbound: db.open_tree("inbound").map_err(sled_err)?,
        inbound_ids: db.open_tree("inbound_ids").map_err(sled_err)?,
        turns: db.open_tree("turns").map_err(sled_err)?,
        turn_text: db.open_tree("turn_text").map_err(sled_err)?,
        deliveries: db.open_tree("deliveries").map_err(sled_err)?,
        cursors: db.open_tree("cursors").map_err(sled_err)?,
        tasks: db.open_tree("tasks").map_err(sled_err)?,
        task_due: db.open_tree("task_due").map_err(sled_err)?,
        task_conv: db.open_tree("task_conv").map_err(sled_err)?,
        task_zones: db.open_tree("task_zones").map_err(sled_err)?,
        db,
    };
    Ok((trees, instance_id))
}

/// Refuses a store of another format; records ours in a new one.
fn check_format_version(dir: &Path, meta: &sled::Tree, existed: bool) -> Result<(), StoreError> {
    match meta
        .get(FORMAT_VERSION_KEY)
        .map_err(|e| StoreError::from_sled(dir, e))?
    {
        Some(bytes) => {
            let found: u32 = decode(dir, "meta", FORMAT_VERSION_KEY, &bytes)?;
            if found != FORMAT_VERSION {
                return Err(StoreError::Incompatible {
                    path: dir.to_path_buf(),
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None if existed => Err(StoreError::corrupt(
            dir,
            "it has database files but no format version (damaged, or not a clawpen store); \
             move it aside to start a new one",
        )),
        None => {
            let value = encode(&FORMAT_VERSION)?;
            meta.insert(FORMAT_VERSION_KEY, value)
                .map_err(|e| StoreError::from_sled(dir, e))?;
            Ok(())
        }
    }
}

/// Reads the instance id, making one on first open.
fn instance_id(dir: &Path, meta: &sled::Tree) -> Result<String, StoreError> {
    if let Some(bytes) = meta
        .get(INSTANCE_ID_KEY)
        .map_err(|e| StoreError::from_sled(dir, e))?
    {
        return decode(dir, "meta", INSTANCE_ID_KEY, &bytes);
    }
    let id = random_hex_id().map_err(|source| StoreError::io(Path::new("/dev/urandom"), source))?;
    meta.insert(INSTANCE_ID_KEY, encode(&id)?)
        .map_err(|e| StoreError::from_sled(dir, e))?;
    Ok(id)
}

/// 8 random bytes from the kernel as 16 hex characters: enough that two installations on
/// one Docker engine never collide, without a dependency for it.
fn random_hex_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Turns a record into its stored JSON.
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Reads a stored JSON record back; failure means the record is corrupt.
fn decode<T: DeserializeOwned>(
    path: &Path,
    tree: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let key = String::from_utf8_lossy(key);
        StoreError::corrupt(path, format!("unreadable record {key:?} in `{tree}`: {e}"))
    })
}

/// The key prefix of one conversation's entries in the inbound trees: the key text's length
/// then the text, so no conversation's prefix is a prefix of another's.
fn conversation_prefix(key: &ConversationKey) -> Vec<u8> {
    let text = key.to_string();
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    let mut prefix = Vec::with_capacity(4 + text.len());
    prefix.extend_from_slice(&len.to_be_bytes());
    prefix.extend_from_slice(text.as_bytes());
    prefix
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
pub(crate) mod tests {
    use super::*;
    use clawpen_domain::Inbound;

    /// A message as an adapter would hand it in.
    pub(crate) fn message(conversation: &ConversationKey, id: &str, at: u64) -> Inbound {
        Inbound {
            id: id.to_string(),
            conversation: conversation.clone(),
            sender_id: "42".to_string(),
            sender_name: "Ada".to_string(),
            text: format!("message {id}"),
            attachments: Vec::new(),
            reply_to: None,
            addressed: true,
            at,
        }
    }

    /// Bytes that look like nothing in particular (xorshift), the same on every run.
    fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn open_creates_the_directory_and_keeps_the_instance_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("store");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.path(), path);
        let id = store.instance_id();
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(format!("{store:?}").contains("store"), "{store:?}");
        drop(store);

        let again = Store::open(&path).unwrap();
        assert_eq!(again.instance_id(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Store::open(other.path()).unwrap().instance_id(), id);
    }

    #[test]
    fn a_second_open_while_the_first_is_held_is_locked() {
        // sled locks with flock, which is per open file, so it conflicts within one
        // process too; this is exactly what a second `clawpen` process would see.
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("is `clawpen run` running?"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");

        // The clone is the same handle, not a second owner; dropping all frees the lock.
        let clone = first.clone();
        drop(first);
        drop(clone);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.db().unwrap().db.open_tree("meta").unwrap();
            meta.insert(FORMAT_VERSION_KEY, encode(&(FORMAT_VERSION + 1)).unwrap())
                .unwrap();
            store.flush().unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        match &error {
            StoreError::Incompatible {
                path,
                found,
                expected,
            } => {
                assert_eq!(path, dir.path());
                assert_eq!((*found, *expected), (FORMAT_VERSION + 1, FORMAT_VERSION));
            }
            other => panic!("expected Incompatible, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .contains(&dir.path().display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn an_unreadable_format_version_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.db().unwrap().db.open_tree("meta").unwrap();
            meta.insert(FORMAT_VERSION_KEY, &b"not json"[..]).unwrap();
            store.flush().unwrap();
        }
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert!(error.to_string().contains("format_version"), "{error}");
    }

    /// Fills a store with records, then applies `damage` to its files whose name starts
    /// with `which` (sled 0.34 writes `conf` and `db`, later `snap.*`).
    fn damaged_store(which: &str, damage: impl Fn(&Path, u64)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let key = ConversationKey::new("telegram", "1");
            for i in 0..50 {
                store
                    .insert_inbound(&message(&key, &i.to_string(), 1_000))
                    .unwrap();
            }
        }
        for (n, entry) in std::fs::read_dir(dir.path()).unwrap().enumerate() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_file() && name.starts_with(which) {
                damage(&path, n as u64 + 1);
            }
        }
        dir
    }

    fn assert_refused_as_corrupt(dir: &Path) {
        let error = Store::open(dir).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&dir.display().to_string()),
            "{error}"
        );
    }

    fn overwrite_with_garbage(path: &Path, seed: u64) {
        let len = std::fs::metadata(path).unwrap().len().max(64) as usize;
        std::fs::write(path, garbage(len, seed)).unwrap();
    }

    #[test]
    fn files_overwritten_with_garbage_are_refused_naming_the_path() {
        // sled refuses the garbage `conf` itself.
        assert_refused_as_corrupt(damaged_store("", overwrite_with_garbage).path());
        assert_refused_as_corrupt(damaged_store("conf", overwrite_with_garbage).path());
    }

    #[test]
    fn a_garbage_database_file_is_not_taken_for_an_empty_store() {
        // sled skips a `db` it cannot parse and comes up empty; the missing format
        // version tells that apart from a new store.
        for seed in 1..5 {
            let dir = damaged_store("db", |path, n| overwrite_with_garbage(path, seed * 31 + n));
            assert_refused_as_corrupt(dir.path());
        }
    }

    #[test]
    fn truncated_files_are_refused_naming_the_path() {
        let dir = damaged_store("", |path, _| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(0)
                .unwrap();
        });
        assert_refused_as_corrupt(dir.path());
    }
}
