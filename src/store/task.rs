//! Scheduled tasks: their records, the due-time index the scheduler's tick reads, and the
//! one store step that turns a due occurrence into an inbound message.
//!
//! Four trees:
//! - `tasks`: [`TaskRecord`] by id (`t` + big-endian id), and the next id under `next_id`.
//! - `task_due`: an empty value under (next due time, id) for every active task, so a tick
//!   reads only what is due, in due order, and never scans every task.
//! - `task_conv`: an empty value under (conversation prefix, id), to list and count one
//!   conversation's tasks (`task_conversation`).
//! - `task_zones`: each conversation's time zone (`/tz`), by conversation key text
//!   (`task_conversation`).
//!
//! [`Store::fire_task`] logs the occurrence in the inbound log (its id names the task and
//! the due time, so a second attempt is a duplicate) and stores the task's next due time
//! in one sled transaction over all the trees involved: after a crash either both happened
//! or neither did.

use clawpen_domain::{ConversationKey, Inbound, TurnId};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::delivery::delivery_key;
use super::inbound::{id_key, log_key};
use super::{
    conversation_prefix, encode, InboundState, InsertOutcome, Store, StoreError, StoredInbound,
};

/// Tree name, for error messages.
const TREE: &str = "tasks";

/// `tasks` key of the id counter.
const NEXT_ID: &[u8] = b"next_id";

/// What a task does when it is due.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// Deliver this text to the chat; no model, no box.
    Reminder {
        /// The text.
        text: String,
    },
    /// Run this prompt as a turn in the conversation's box.
    Job {
        /// The prompt.
        prompt: String,
        /// A shell command run in the box first; the model runs only if it exits 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        check: Option<String>,
    },
}

/// When a task runs, as stored (the scheduler parses it again on use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredSchedule {
    /// Once, at this Unix time.
    Once {
        /// The instant.
        at: i64,
    },
    /// Every `secs` seconds from `anchor` (the first run).
    Every {
        /// The interval.
        secs: u64,
        /// The first run.
        anchor: i64,
    },
    /// A five-field cron expression in the task's zone.
    Cron {
        /// The expression.
        expr: String,
    },
}

/// What happens to occurrences missed while clawpen was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// One run at start, noted as late; the rest are dropped.
    #[default]
    Once,
    /// None; the user is told it was skipped.
    Skip,
}

/// Whether a task runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// It runs when due.
    #[default]
    Active,
    /// It does not run until resumed.
    Paused {
        /// Why, when the bridge paused it (its platform is gone); `None` for a user's pause.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One scheduled task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id, unique in this store, shown to users (`/pause 3`).
    pub id: u64,
    /// The conversation it belongs to and runs in.
    pub conversation: ConversationKey,
    /// A short title.
    pub title: String,
    /// What it does.
    pub kind: TaskKind,
    /// When.
    pub schedule: StoredSchedule,
    /// The IANA time zone its schedule is read in.
    pub zone: String,
    /// What happens to occurrences missed while clawpen was down.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Active or paused.
    #[serde(default)]
    pub state: TaskState,
    /// When it runs next (Unix seconds); `None` once it never will.
    pub next_due: Option<i64>,
    /// The due time of its last occurrence.
    #[serde(default)]
    pub last_due: Option<i64>,
    /// What became of its last run, in words ("ran", "skipped: …", "failed: …").
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// Who made it (the platform's user id, or `agent`).
    pub created_by: String,
    /// When it was made.
    pub created_at: i64,
}

impl TaskRecord {
    /// Whether it runs when due.
    pub fn is_active(&self) -> bool {
        self.state == TaskState::Active
    }
}

fn task_key(id: u64) -> Vec<u8> {
    let mut key = b"t".to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A due-index key: the due time made to sort as bytes (sign bit flipped), then the id.
fn due_key(due: i64, id: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&((due as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

fn read_due_key(key: &[u8]) -> Option<(i64, u64)> {
    let due = u64::from_be_bytes(key.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let id = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((due as i64, id))
}

fn conv_key(conversation: &ConversationKey, id: u64) -> Vec<u8> {
    let mut key = conversation_prefix(conversation);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

type Abort = ConflictableTransactionError<StoreError>;

impl Store {
    /// Stores a new task, giving it the next id (the `id` passed is ignored). Flushed.
    pub fn create_task(&self, task: &TaskRecord) -> Result<TaskRecord, StoreError> {
        let created = self.create_task_unflushed(task)?;
        self.flush()?;
        Ok(created)
    }

    /// [`Store::create_task`] without the flush, for a commit or a bulk load.
    pub fn create_task_unflushed(&self, task: &TaskRecord) -> Result<TaskRecord, StoreError> {
        let inner = self.db()?;
        let created = (&inner.tasks, &inner.task_due, &inner.task_conv)
            .transaction(|(tasks, due, conv)| {
                let id = match tasks.get(NEXT_ID)? {
                    Some(bytes) => bytes
                        .as_ref()
                        .try_into()
                        .map(u64::from_be_bytes)
                        .unwrap_or(1),
                    None => 1,
                };
                tasks.insert(NEXT_ID, &(id + 1).to_be_bytes())?;
                let mut task = task.clone();
                task.id = id;
                tasks.insert(task_key(id), encode(&task).map_err(Abort::Abort)?)?;
                if let (true, Some(next)) = (task.is_active(), task.next_due) {
                    due.insert(&due_key(next, id), &[])?;
                }
                conv.insert(conv_key(&task.conversation, id), &[])?;
                Ok(task)
            })
            .map_err(|e| self.tx_err(e))?;
        Ok(created)
    }

    /// One task, if it exists.
    pub fn task(&self, id: u64) -> Result<Option<TaskRecord>, StoreError> {
        let key = task_key(id);
        match self.db()?.tasks.get(&key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => self.decode(TREE, &key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every task (for the owner's view of all of them, and the benchmark).
    pub fn all_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let mut found = Vec::new();
        for entry in self.db()?.tasks.scan_prefix(b"t") {
            let (key, bytes) = entry.map_err(|e| self.sled_err(e))?;
            found.extend(self.decode_or_skip::<TaskRecord>(TREE, &key, &bytes));
        }
        Ok(found)
    }

    /// Up to `limit` (due time, id) pairs due at or before `now`, earliest first: what a
    /// tick reads. Only the index's due part is read.
    pub fn due_tasks(&self, now: i64, limit: usize) -> Result<Vec<(i64, u64)>, StoreError> {
        let end = due_key(now, u64::MAX);
        let mut due = Vec::new();
        for entry in self.db()?.task_due.range(..=end.as_slice()).take(limit) {
            let (key, _) = entry.map_err(|e| self.sled_err(e))?;
            due.extend(read_due_key(&key));
        }
        Ok(due)
    }

    /// Removes one due-index entry whose task does not stand behind it (gone, paused, or
    /// due at another time). Flushed.
    pub fn remove_due(&self, due: i64, id: u64) -> Result<(), StoreError> {
        self.db()?
            .task_due
            .remove(due_key(due, id))
            .map_err(|e| self.sled_err(e))?;
        self.flush()
    }

    /// The earliest due time of any active task.
    pub fn next_due_time(&self) -> Result<Option<i64>, StoreError> {
        let first = self.db()?.task_due.first().map_err(|e| self.sled_err(e))?;
        Ok(first
            .and_then(|(key, _)| read_due_key(&key))
            .map(|(due, _)| due))
    }

    /// Replaces a task's record and its place in the due index. Flushed.
    pub fn update_task(&self, task: &TaskRecord) -> Result<(), StoreError> {
        let inner = self.db()?;
        let key = task_key(task.id);
        (&inner.tasks, &inner.task_due)
            .transaction(|(tasks, due)| {
                if let Some(old) = tasks.get(&key)? {
                    let old: TaskRecord = self.decode(TREE, &key, &old).map_err(Abort::Abort)?;
                    if let Some(at) = old.next_due {
                        due.remove(&due_key(at, old.id))?;
                    }
                }
                tasks.insert(key.as_slice(), encode(task).map_err(Abort::Abort)?)?;
                if let (true, Some(next)) = (task.is_active(), task.next_due) {
                    due.insert(&due_key(next, task.id), &[])?;
                }
                Ok(())
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush()
    }

    /// Records what became of a task's last run, changing nothing else (a tick may be
    /// moving the same task on meanwhile). Flushed.
    pub fn note_task_outcome(&self, id: u64, outcome: &str) -> Result<(), StoreError> {
        let inner = self.db()?;
        let key = task_key(id);
        inner
            .tasks
            .transaction(|tasks| {
                let Some(bytes) = tasks.get(&key)? else {
                    return Ok(());
                };
                let mut task: TaskRecord = self.decode(TREE, &key, &bytes).map_err(Abort::Abort)?;
                task.last_outcome = Some(outcome.to_string());
                tasks.insert(key.as_slice(), encode(&task).map_err(Abort::Abort)?)?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush()
    }

    /// Removes a task and its index entries; false if there was none. Flushed.
    pub fn delete_task(&self, id: u64) -> Result<bool, StoreError> {
        let inner = self.db()?;
        let key = task_key(id);
        let found = (&inner.tasks, &inner.task_due, &inner.task_conv)
            .transaction(|(tasks, due, conv)| {
                let Some(old) = tasks.remove(key.as_slice())? else {
                    return Ok(false);
                };
                let old: TaskRecord = self.decode(TREE, &key, &old).map_err(Abort::Abort)?;
                if let Some(at) = old.next_due {
                    due.remove(&due_key(at, id))?;
                }
                conv.remove(conv_key(&old.conversation, id))?;
                Ok(true)
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush()?;
        Ok(found)
    }

    /// The store step of a due occurrence, not flushed (for a commit): logs `occurrence`
    /// as a pending inbound message unless its id is logged already, and in the same
    /// transaction stores `task` as it is after this occurrence (its next due time, or
    /// removed when `remove` — a once-task that ran). The task's old due entry (`was_due`)
    /// leaves the index either way, so a duplicate cannot fire again.
    pub fn fire_task_unflushed(
        &self,
        occurrence: &Inbound,
        task: &TaskRecord,
        was_due: i64,
        remove: bool,
    ) -> Result<InsertOutcome, StoreError> {
        let inner = self.db()?;
        let prefix = conversation_prefix(&occurrence.conversation);
        let ids_key = id_key(&prefix, &occurrence.id);
        let seq = inner.db.generate_id().map_err(|e| self.sled_err(e))?;
        let entry_key = log_key(&prefix, seq);
        let entry = encode(&StoredInbound {
            inbound: occurrence.clone(),
            state: InboundState::Pending,
        })?;
        let record = encode(task)?;
        let key = task_key(task.id);
        let trees = (
            &inner.inbound_ids,
            &inner.inbound,
            &inner.tasks,
            &inner.task_due,
            &inner.task_conv,
        );
        trees
            .transaction(|(ids, log, tasks, due, conv)| {
                due.remove(&due_key(was_due, task.id))?;
                if remove {
                    tasks.remove(key.as_slice())?;
                    conv.remove(conv_key(&task.conversation, task.id))?;
                } else {
                    tasks.insert(key.as_slice(), record.as_slice())?;
                    if let (true, Some(next)) = (task.is_active(), task.next_due) {
                        due.insert(&due_key(next, task.id), &[])?;
                    }
                }
                if ids.get(&ids_key)?.is_some() {
                    return Ok(InsertOutcome::Duplicate);
                }
                ids.insert(ids_key.as_slice(), &seq.to_be_bytes())?;
                log.insert(entry_key.as_slice(), entry.as_slice())?;
                Ok(InsertOutcome::New)
            })
            .map_err(|e| self.tx_err(e))
    }

    /// A reminder (or a note about a task) handed to delivery, not flushed (for a commit):
    /// marks its inbound message done and records its text as a reply to deliver, keyed by
    /// the message id, in one transaction. The delivery forgets the record once the text is
    /// shown; a restart before that shows it then, as it does a finished turn's reply.
    pub fn deliver_note_unflushed(
        &self,
        conversation: &ConversationKey,
        id: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let inner = self.db()?;
        let prefix = conversation_prefix(conversation);
        let ids_key = id_key(&prefix, id);
        let turn = TurnId::from(id);
        let delivery = delivery_key(conversation, &turn);
        (&inner.inbound_ids, &inner.inbound, &inner.deliveries)
            .transaction(|(ids, log, deliveries)| {
                self.update_state(ids, log, &prefix, &ids_key, &InboundState::Done)?;
                let mut pending = self.delivery_in(deliveries, conversation, &turn, &delivery)?;
                pending.final_text = Some(text.to_string());
                deliveries.insert(delivery.as_slice(), encode(&pending).map_err(Abort::Abort)?)?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn reminder(conversation: &ConversationKey, due: i64) -> TaskRecord {
        TaskRecord {
            id: 0,
            conversation: conversation.clone(),
            title: "stretch".into(),
            kind: TaskKind::Reminder {
                text: "Stretch!".into(),
            },
            schedule: StoredSchedule::Every {
                secs: 60,
                anchor: due,
            },
            zone: "UTC".into(),
            catch_up: CatchUp::Once,
            state: TaskState::Active,
            next_due: Some(due),
            last_due: None,
            last_outcome: None,
            created_by: "42".into(),
            created_at: 0,
        }
    }

    #[test]
    fn tasks_get_ids_and_are_found_by_due_time_and_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = ConversationKey::new("terminal", "a");
        let b = ConversationKey::new("terminal", "b");
        let first = store.create_task(&reminder(&a, 100)).unwrap();
        let second = store.create_task(&reminder(&b, -5)).unwrap();
        let third = store.create_task(&reminder(&a, 300)).unwrap();
        assert_eq!((first.id, second.id, third.id), (1, 2, 3));
        assert_eq!(store.due_tasks(100, 10).unwrap(), [(-5, 2), (100, 1)]);
        assert_eq!(store.due_tasks(99, 10).unwrap(), [(-5, 2)]);
        assert_eq!(store.next_due_time().unwrap(), Some(-5));
        assert_eq!(store.count_tasks(&a).unwrap(), 2);
        let ids: Vec<u64> = store.tasks_of(&a).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 3]);

        // Paused: out of the due index, still listed.
        let mut paused = first.clone();
        paused.state = TaskState::Paused { reason: None };
        store.update_task(&paused).unwrap();
        assert_eq!(store.due_tasks(100, 10).unwrap(), [(-5, 2)]);
        assert_eq!(store.count_tasks(&a).unwrap(), 2);
        assert!(store.delete_task(3).unwrap());
        assert!(!store.delete_task(3).unwrap());
        assert_eq!(store.count_tasks(&a).unwrap(), 1);
        assert_eq!(store.all_tasks().unwrap().len(), 2);
    }

    #[test]
    fn an_occurrence_is_logged_once_and_moves_its_task_on_in_the_same_step() {
        let dir = tempfile::tempdir().unwrap();
        let key = ConversationKey::new("terminal", "a");
        {
            let store = Store::open(dir.path()).unwrap();
            let task = store.create_task(&reminder(&key, 100)).unwrap();
            let occurrence = crate::store::tests::message(&key, "task:1:100", 100);
            let mut next = task.clone();
            next.next_due = Some(160);
            next.last_due = Some(100);
            let fired = store
                .fire_task_unflushed(&occurrence, &next, 100, false)
                .unwrap();
            assert_eq!(fired, InsertOutcome::New);
            // The same occurrence again (a tick that read the index before the step) is a
            // duplicate and fires nothing.
            let again = store
                .fire_task_unflushed(&occurrence, &next, 100, false)
                .unwrap();
            assert_eq!(again, InsertOutcome::Duplicate);
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.due_tasks(159, 10).unwrap(), []);
        assert_eq!(store.due_tasks(160, 10).unwrap(), [(160, 1)]);
        let pending = store.pending_inbound(&key).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].inbound.id, "task:1:100");
        assert_eq!(store.task(1).unwrap().unwrap().last_due, Some(100));
    }

    #[test]
    fn a_reminder_handed_to_delivery_is_done_and_pending_as_a_reply_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let key = ConversationKey::new("telegram", "1");
        {
            let store = Store::open(dir.path()).unwrap();
            let occurrence = crate::store::tests::message(&key, "task:1:100", 100);
            store.insert_inbound(&occurrence).unwrap();
            store
                .deliver_note_unflushed(&key, "task:1:100", "⏰ Tea time")
                .unwrap();
            store.flush().unwrap();
        }
        // A restart finds nothing to run and a reply to show.
        let store = Store::open(dir.path()).unwrap();
        assert!(store.pending_inbound(&key).unwrap().is_empty());
        let pending = store.pending_deliveries().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].turn.as_str(), "task:1:100");
        assert_eq!(pending[0].final_text.as_deref(), Some("⏰ Tea time"));
    }
}
