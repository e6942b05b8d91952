//! The mailboxes of live actors, and the one rule that makes retiring an actor safe.
//!
//! A dispatcher looks an actor's sender up, lets go of the map, then sends; the actor may
//! decide to retire in between. Retiring therefore happens under the map's lock: the actor
//! closes its mailbox there, so a later send fails at once and the dispatcher looks again,
//! and takes back whatever arrived before the close. If anything did, it stays, with a fresh
//! mailbox registered in the same critical section, so no second actor can appear meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use clawpen_adapters::ConversationKey;
use tokio::sync::mpsc;

/// Commands waiting for one conversation's actor. When full, a dispatcher waits: the
/// message is already stored, so the adapter is merely slowed, and nothing is lost.
pub(crate) const MAILBOX_CAPACITY: usize = 64;

/// The mailbox of every live actor, by conversation.
pub(crate) struct Mailboxes<T> {
    /// A std mutex: held only to look up, insert or retire, never across an await.
    map: Mutex<HashMap<ConversationKey, Entry<T>>>,
}

/// One live actor's mailbox, and whether it sits idle with its box attached, so a message
/// can be handed to it to store and begin its turn in one step (see `Router::accept`).
struct Entry<T> {
    sender: mpsc::Sender<T>,
    idle: Arc<AtomicBool>,
}

/// What became of an actor that asked to retire.
#[derive(Debug)]
pub(crate) enum Retire<T> {
    /// It is gone from the map and its mailbox is closed: it may exit.
    Gone,
    /// Commands reached it while it was retiring: it handles them (in this order) with the
    /// fresh mailbox now registered for it.
    Stay(Vec<T>, mpsc::Receiver<T>),
}

impl<T> Mailboxes<T> {
    pub(crate) fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ConversationKey, Entry<T>>> {
        // A poisoned map only means a panic mid-update; the data is still usable.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new mailbox for `key`, registered; the receiver is the new actor's, and so is
    /// `idle`, which it sets while it sits idle with its box attached.
    pub(crate) fn open(
        &self,
        key: &ConversationKey,
        idle: Arc<AtomicBool>,
    ) -> (mpsc::Sender<T>, mpsc::Receiver<T>) {
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        let entry = Entry {
            sender: tx.clone(),
            idle,
        };
        self.lock().insert(key.clone(), entry);
        (tx, rx)
    }

    /// The live actor's sender, if any.
    pub(crate) fn get(&self, key: &ConversationKey) -> Option<mpsc::Sender<T>> {
        self.lock().get(key).map(|e| e.sender.clone())
    }

    /// The live actor's sender, if it sits idle with its box attached right now.
    pub(crate) fn idle(&self, key: &ConversationKey) -> Option<mpsc::Sender<T>> {
        self.lock()
            .get(key)
            .filter(|e| e.idle.load(Ordering::Acquire))
            .map(|e| e.sender.clone())
    }

    /// Forgets `sender` if it is still the one registered for `key` (its actor is gone).
    pub(crate) fn forget(&self, key: &ConversationKey, sender: &mpsc::Sender<T>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|e| e.sender.same_channel(sender)) {
            map.remove(key);
        }
    }

    /// The conversations with a live actor, for naming what did not stop in time.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().map(ToString::to_string).collect()
    }

    /// An actor with nothing to do asks to exit; see the module comment.
    pub(crate) fn retire(
        &self,
        key: &ConversationKey,
        mailbox: &mut mpsc::Receiver<T>,
    ) -> Retire<T> {
        let mut map = self.lock();
        mailbox.close();
        let mut left = Vec::new();
        while let Ok(command) = mailbox.try_recv() {
            left.push(command);
        }
        if left.is_empty() {
            map.remove(key);
            return Retire::Gone;
        }
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        match map.get_mut(key) {
            Some(entry) => entry.sender = tx,
            None => {
                // Not reached: a live actor's entry is removed only here. Without its flag,
                // messages simply take the router's path.
                let idle = Arc::default();
                map.insert(key.clone(), Entry { sender: tx, idle });
            }
        }
        Retire::Stay(left, rx)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]
mod tests {
    use super::*;

    fn key() -> ConversationKey {
        ConversationKey::new("test", "1")
    }

    #[tokio::test]
    async fn a_send_after_retiring_fails_so_the_dispatcher_looks_again() {
        let boxes = Mailboxes::<u32>::new();
        let (_, mut rx) = boxes.open(&key(), Arc::default());
        // A dispatcher looked the actor up before it retired...
        let looked_up = boxes.get(&key()).unwrap();
        assert!(matches!(boxes.retire(&key(), &mut rx), Retire::Gone));
        // ...and sends after: it must be told, not have its command vanish with the actor.
        assert!(looked_up.send(7).await.is_err());
        assert!(boxes.get(&key()).is_none());
    }

    #[tokio::test]
    async fn commands_that_arrived_while_retiring_keep_the_actor() {
        let boxes = Mailboxes::<u32>::new();
        let (tx, mut rx) = boxes.open(&key(), Arc::default());
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let Retire::Stay(left, mut fresh) = boxes.retire(&key(), &mut rx) else {
            panic!("the actor retired with commands in its mailbox");
        };
        assert_eq!(left, vec![1, 2]);
        // The old sender is dead; the registered one reaches the same actor.
        assert!(tx.send(3).await.is_err());
        boxes.get(&key()).unwrap().send(4).await.unwrap();
        assert_eq!(fresh.recv().await, Some(4));
    }
}
