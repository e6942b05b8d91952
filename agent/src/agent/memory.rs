//! The conversation's history, kept in the workspace so it outlives the agent process.
//!
//! A box is stopped when idle and restarted with a new agent process but the same volume,
//! so the history lives in `.clawpen/history.jsonl` in the workspace: one [`Entry`] per
//! line, appended as the turn goes (user messages, the model's text and tool calls, tool
//! results). A turn that is cancelled mid-way leaves a consistent prefix behind; a call
//! left without its result is answered by [`normalize`](crate::provider::wire::normalize).
//!
//! When the history grows past its token budget the older part is replaced by a
//! [`Entry::Summary`] the model writes ([`split_point`] picks the cut, [`transcript`]
//! renders what is summarized). `MEMORY.md`, which the model curates itself, is a separate
//! file that none of this touches.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provider::wire::{normalize, Block, Message, Role, ToolCall, ToolResult};

/// Where the history lives, relative to the workspace.
pub const HISTORY_FILE: &str = ".clawpen/history.jsonl";

/// One thing that happened in the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// Messages from the chat, formatted with sender and time.
    User {
        /// The text as the model saw it.
        text: String,
    },
    /// One model answer: its text and the tools it called.
    Assistant {
        /// The text.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        text: String,
        /// The tool calls.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calls: Vec<ToolCall>,
    },
    /// What a tool said.
    Tool(ToolResult),
    /// A summary of everything before it, written by the model at compaction.
    Summary {
        /// The summary.
        text: String,
    },
}

impl Entry {
    /// Roughly how many tokens the entry costs: chars / 4, the usual rule of thumb.
    pub fn tokens(&self) -> usize {
        let chars = match self {
            Entry::User { text } | Entry::Summary { text } => text.len(),
            Entry::Assistant { text, calls } => {
                text.len()
                    + calls
                        .iter()
                        .map(|call| call.name.len() + call.input.to_string().len() + 16)
                        .sum::<usize>()
            }
            Entry::Tool(result) => result.content.len() + 16,
        };
        chars.div_ceil(4)
    }
}

/// The history of one conversation, in memory and in its file.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    entries: Vec<Entry>,
}

impl History {
    /// The history stored in `workspace`; empty if there is none. Lines that do not
    /// parse (a write cut short by a crash) are skipped with a note.
    pub fn load(workspace: &Path) -> History {
        let path = workspace.join(HISTORY_FILE);
        let mut entries = Vec::new();
        match File::open(&path) {
            Ok(file) => {
                for (number, line) in BufReader::new(file).lines().enumerate() {
                    let line = match line {
                        Ok(line) => line,
                        Err(err) => {
                            eprintln!("clawpen-agent: {}: {err}", path.display());
                            break;
                        }
                    };
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str(&line) {
                        Ok(entry) => entries.push(entry),
                        Err(err) => eprintln!(
                            "clawpen-agent: {}:{}: skipped: {err}",
                            path.display(),
                            number + 1
                        ),
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => eprintln!("clawpen-agent: cannot read {}: {err}", path.display()),
        }
        History { path, entries }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Add an entry and store it. A failed write is logged, not fatal: the turn goes on
    /// with the history in memory.
    pub fn push(&mut self, entry: Entry) {
        if let Err(err) = self.append(&entry) {
            eprintln!("clawpen-agent: cannot write {}: {err}", self.path.display());
        }
        self.entries.push(entry);
    }

    fn append(&self, entry: &Entry) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        // One write per entry, so a crash cuts at most the last line.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)
    }

    /// Forget everything (`/reset`).
    pub fn clear(&mut self) -> io::Result<()> {
        self.entries.clear();
        match fs::remove_file(&self.path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// The estimated size in tokens.
    pub fn tokens(&self) -> usize {
        self.entries.iter().map(Entry::tokens).sum()
    }

    /// Replace the entries before `split` by a summary, in memory and (atomically) on disk.
    pub fn summarize(&mut self, split: usize, summary: String) -> io::Result<()> {
        let split = split.min(self.entries.len());
        let mut entries = vec![Entry::Summary { text: summary }];
        entries.extend_from_slice(&self.entries[split..]);
        let mut text = Vec::new();
        for entry in &entries {
            text.extend(serde_json::to_vec(entry)?);
            text.push(b'\n');
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let temporary = self.path.with_extension("jsonl.tmp");
        fs::write(&temporary, text)?;
        fs::rename(&temporary, &self.path)?;
        self.entries = entries;
        Ok(())
    }

    /// The history as model messages, ready for either API.
    pub fn messages(&self) -> Vec<Message> {
        let messages = self
            .entries
            .iter()
            .map(|entry| match entry {
                Entry::User { text } => Message::user(text.clone()),
                Entry::Summary { text } => Message::user(format!(
                    "[Summary of the conversation before this point]\n{text}"
                )),
                Entry::Assistant { text, calls } => {
                    let mut content = vec![Block::Text(text.clone())];
                    content.extend(calls.iter().cloned().map(Block::ToolUse));
                    Message {
                        role: Role::Assistant,
                        content,
                    }
                }
                Entry::Tool(result) => Message {
                    role: Role::User,
                    content: vec![Block::ToolResult(result.clone())],
                },
            })
            .collect();
        normalize(messages)
    }
}

/// Where to cut `entries` (over `budget` tokens) so that what is kept is about half the
/// budget and starts with a user entry; `None` when there is nothing worth summarizing.
pub fn split_point(entries: &[Entry], budget: usize) -> Option<usize> {
    let keep = budget / 2;
    let mut kept = 0;
    let mut start = entries.len();
    while start > 0 && kept + entries[start - 1].tokens() <= keep {
        start -= 1;
        kept += entries[start].tokens();
    }
    let is_user = |entry: &Entry| matches!(entry, Entry::User { .. });
    let split = match entries[start..].iter().position(is_user) {
        Some(offset) => start + offset,
        // The last exchange alone is over the budget: keep just it.
        None => entries.iter().rposition(is_user)?,
    };
    let worth = !matches!(&entries[..split], [] | [Entry::Summary { .. }]);
    worth.then_some(split)
}

/// The most chars of one tool result or call input shown in a transcript.
const TRANSCRIPT_ITEM: usize = 2_000;

/// The most chars of a whole transcript; older text is dropped first.
const MAX_TRANSCRIPT: usize = 400_000;

/// `entries` as plain text for the model to summarize.
pub fn transcript(entries: &[Entry]) -> String {
    let mut text = String::new();
    for entry in entries {
        match entry {
            Entry::Summary { text: summary } => {
                text.push_str("[Summary of what came before]\n");
                text.push_str(summary);
            }
            Entry::User { text: said } => text.push_str(said),
            Entry::Assistant { text: said, calls } => {
                if !said.is_empty() {
                    text.push_str("assistant: ");
                    text.push_str(said);
                }
                for call in calls {
                    let input = clip(&call.input.to_string(), TRANSCRIPT_ITEM);
                    text.push_str(&format!("\nassistant called {}: {input}", call.name));
                }
            }
            Entry::Tool(result) => {
                let what = if result.is_error {
                    "tool error"
                } else {
                    "tool result"
                };
                text.push_str(&format!(
                    "{what}: {}",
                    clip(&result.content, TRANSCRIPT_ITEM)
                ));
            }
        }
        text.push_str("\n\n");
    }
    if text.len() > MAX_TRANSCRIPT {
        let mut start = text.len() - MAX_TRANSCRIPT;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text = format!("[… earlier part cut …]\n{}", &text[start..]);
    }
    text
}

/// `text` cut to at most `max` bytes on a char boundary, with a mark when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(text: &str) -> Entry {
        Entry::User { text: text.into() }
    }

    fn said(text: &str) -> Entry {
        Entry::Assistant {
            text: text.into(),
            calls: Vec::new(),
        }
    }

    #[test]
    fn history_survives_a_reload() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut history = History::load(dir.path());
        assert!(history.entries().is_empty());
        history.push(user("ann: hi"));
        history.push(Entry::Assistant {
            text: "looking".into(),
            calls: vec![ToolCall {
                id: "t1".into(),
                name: "list_files".into(),
                input: json!({}),
            }],
        });
        history.push(Entry::Tool(ToolResult {
            id: "t1".into(),
            content: "a.txt".into(),
            is_error: false,
        }));
        // A torn last line (a crash mid-write) is skipped, the rest is kept.
        let path = dir.path().join(HISTORY_FILE);
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"{\"kind\":\"user\",\"te")?;
        let reloaded = History::load(dir.path());
        assert_eq!(reloaded.entries(), history.entries());
        let messages = reloaded.messages();
        assert_eq!(messages.len(), 3);
        Ok(())
    }

    #[test]
    fn summarize_replaces_the_older_part_and_clear_forgets_all() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("MEMORY.md"), "remember me")?;
        let mut history = History::load(dir.path());
        for n in 0..4 {
            history.push(user(&format!("q{n}")));
            history.push(said(&format!("a{n}")));
        }
        history.summarize(4, "talked about q0 and q1".into())?;
        let reloaded = History::load(dir.path());
        assert_eq!(
            reloaded.entries(),
            &[
                Entry::Summary {
                    text: "talked about q0 and q1".into()
                },
                user("q2"),
                said("a2"),
                user("q3"),
                said("a3"),
            ]
        );
        let first = &reloaded.messages()[0];
        assert_eq!(first.role, Role::User);
        history.clear()?;
        assert!(History::load(dir.path()).entries().is_empty());
        assert_eq!(
            fs::read_to_string(dir.path().join("MEMORY.md"))?,
            "remember me"
        );
        Ok(())
    }

    #[test]
    fn the_split_keeps_about_half_the_budget_from_a_user_entry() {
        let big = "x".repeat(400); // 100 tokens
        let entries: Vec<Entry> = (0..10)
            .flat_map(|n| [user(&format!("{n}{big}")), said(&big)])
            .collect();
        // 20 entries of ~100 tokens; keep ~500 → the last 4 or so, from a user entry.
        let split = split_point(&entries, 1000);
        assert_eq!(split, Some(16));
        // A last exchange bigger than the budget is kept alone.
        let huge = "y".repeat(40_000);
        let entries = vec![user("a"), said("b"), user("c"), said(&huge)];
        assert_eq!(split_point(&entries, 1000), Some(2));
        // Nothing but one exchange (or a summary) before: nothing to gain.
        assert_eq!(split_point(&entries[2..], 1000), None);
        let entries = vec![Entry::Summary { text: "s".into() }, user("c"), said(&huge)];
        assert_eq!(split_point(&entries, 1000), None);
    }

    #[test]
    fn transcripts_show_everything_briefly() {
        let text = transcript(&[
            Entry::Summary {
                text: "before".into(),
            },
            user("[2024-01-01 10:00] ann: hi"),
            Entry::Assistant {
                text: "let me see".into(),
                calls: vec![ToolCall {
                    id: "1".into(),
                    name: "shell".into(),
                    input: json!({"command": "ls"}),
                }],
            },
            Entry::Tool(ToolResult {
                id: "1".into(),
                content: "z".repeat(5000),
                is_error: false,
            }),
        ]);
        assert!(text.contains("before"), "{text}");
        assert!(text.contains("ann: hi"), "{text}");
        assert!(
            text.contains("assistant called shell: {\"command\":\"ls\"}"),
            "{text}"
        );
        assert!(text.contains("more bytes]"), "{text}");
        assert!(text.len() < 3000);
    }
}
