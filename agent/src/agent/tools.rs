//! The tools the model may call, run inside the box.
//!
//! Every call first puts a short status line in the chat ("running: cargo test"), then
//! runs, and always produces a result for the model: a failure (bad arguments, a path
//! outside the workspace, an edit that does not match) is a tool error the model can read
//! and correct, never an error of the turn. File tools are confined to the workspace by
//! [`Workspace`]; `web_fetch` goes through the bridge, which refuses private destinations,
//! and so do the scheduled-task tools (`tasks`).

use std::path::PathBuf;
use std::time::Duration;

use clawpen_protocol::{Request, ResponsePart};
use serde_json::{json, Value};

use super::files;
use super::fs::Workspace;
use super::memory::clip;
use super::search;
use super::shell;
use super::tasks;
use crate::provider::run::Out;
use crate::provider::wire::{ToolCall, ToolSpec};
use crate::tunnel::Tunnel;

/// The most output of one shell command given to the model.
pub const SHELL_OUTPUT: usize = 16 * 1024;
/// The most text of one fetched page given to the model.
pub const FETCH_CAP: usize = 48 * 1024;
/// The longest status line.
const STATUS_CHARS: usize = 80;

/// A tool's result for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What it said.
    pub content: String,
    /// Whether it failed.
    pub is_error: bool,
}

impl Outcome {
    fn ok(content: impl Into<String>) -> Self {
        Outcome {
            content: content.into(),
            is_error: false,
        }
    }

    fn error(content: impl Into<String>) -> Self {
        Outcome {
            content: content.into(),
            is_error: true,
        }
    }
}

/// What the tools work on; cheap to clone.
#[derive(Clone, Debug)]
pub struct Tools {
    workspace: Workspace,
    tunnel: Tunnel,
}

/// The tools as offered to the model.
pub fn specs() -> Vec<ToolSpec> {
    let mut all = base_specs();
    all.extend(tasks::specs());
    all
}

/// The tools that work in the box and the web.
fn base_specs() -> Vec<ToolSpec> {
    let path = json!({"type": "string", "description": "Path relative to the workspace."});
    vec![
        ToolSpec {
            name: "shell",
            description: "Run a shell command with `sh -c` in the workspace (busybox userland, no network). Returns stdout and stderr together (long output is cut in the middle) and the exit code.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The command line."},
                    "timeout_secs": {"type": "integer", "description": "Seconds before the command is killed (default 60, at most 600)."}
                },
                "required": ["command"]
            }),
        },
        ToolSpec {
            name: "read_file",
            description: "Read a text file from the workspace. For long files, read a range of lines.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": path,
                    "start_line": {"type": "integer", "description": "First line to read, from 1 (default 1)."},
                    "max_lines": {"type": "integer", "description": "How many lines to read (default: all that fit)."}
                },
                "required": ["path"]
            }),
        },
        ToolSpec {
            name: "write_file",
            description: "Create or overwrite a file in the workspace with the given content (parent directories are created).",
            parameters: json!({
                "type": "object",
                "properties": {"path": path, "content": {"type": "string"}},
                "required": ["path", "content"]
            }),
        },
        ToolSpec {
            name: "edit_file",
            description: "Replace one exact piece of text in a file. `old_text` must appear exactly once in the file (include enough surrounding text to make it unique), whitespace included.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": path,
                    "old_text": {"type": "string", "description": "The exact text to replace."},
                    "new_text": {"type": "string", "description": "The text to put in its place."}
                },
                "required": ["path", "old_text", "new_text"]
            }),
        },
        ToolSpec {
            name: "list_files",
            description: "List a directory of the workspace (directories end in /, files show their size).",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Directory relative to the workspace (default: the workspace)."},
                    "recursive": {"type": "boolean", "description": "Also list subdirectories (default false)."}
                }
            }),
        },
        ToolSpec {
            name: "search_files",
            description: "Find lines containing a text in the workspace's files, recursively. Returns path:line: text for each match.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "The text to find (plain text, not a pattern)."},
                    "path": {"type": "string", "description": "Directory or file to search (default: the workspace)."},
                    "ignore_case": {"type": "boolean", "description": "Match regardless of case (default false)."}
                },
                "required": ["query"]
            }),
        },
        ToolSpec {
            name: "send_message",
            description: "Send a separate chat message right away, e.g. progress on a long task. Your final answer still goes in your reply.",
            parameters: json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            }),
        },
        ToolSpec {
            name: "send_file",
            description: "Upload a workspace file into the chat.",
            parameters: json!({
                "type": "object",
                "properties": {"path": path},
                "required": ["path"]
            }),
        },
        ToolSpec {
            name: "web_fetch",
            description: "Fetch a web page (http or https URL) and return it as text.",
            parameters: json!({
                "type": "object",
                "properties": {"url": {"type": "string"}},
                "required": ["url"]
            }),
        },
    ]
}

impl Tools {
    /// Tools working in `workspace`, fetching through `tunnel`.
    pub fn new(workspace: Workspace, tunnel: Tunnel) -> Self {
        Tools { workspace, tunnel }
    }

    /// Run one call: a status line to `out`, then the tool.
    pub async fn run(&self, call: &ToolCall, out: &mut Out) -> Outcome {
        let input = &call.input;
        if !input.is_object() {
            out.status(format!("{}: bad arguments", call.name)).await;
            return Outcome::error(
                "The arguments were not a valid JSON object; call the tool again with valid JSON.",
            );
        }
        match self.dispatch(&call.name, input, out).await {
            Ok(outcome) => outcome,
            Err(message) => Outcome::error(message),
        }
    }

    async fn dispatch(&self, name: &str, input: &Value, out: &mut Out) -> Result<Outcome, String> {
        match name {
            "shell" => {
                let command = string(input, "command")?;
                let secs = number(input, "timeout_secs")?
                    .unwrap_or(shell::DEFAULT_TIMEOUT.as_secs())
                    .clamp(1, shell::MAX_TIMEOUT.as_secs());
                let first_line = command.lines().next().unwrap_or_default();
                out.status(format!("running: {}", short(first_line))).await;
                let text = shell::run(
                    command,
                    self.workspace.root(),
                    Duration::from_secs(secs),
                    SHELL_OUTPUT,
                )
                .await
                .map_err(|err| format!("could not start the shell: {err}"))?;
                Ok(Outcome::ok(text))
            }
            "read_file" => {
                let (path, shown) = self.path(input, "path")?;
                out.status(format!("reading {}", short(&shown))).await;
                let start = number(input, "start_line")?;
                let count = number(input, "max_lines")?;
                files::read(&path, &shown, start, count).map(Outcome::ok)
            }
            "write_file" => {
                let (path, shown) = self.path(input, "path")?;
                let content = string(input, "content")?;
                out.status(format!("writing {}", short(&shown))).await;
                files::write(&path, &shown, content).map(Outcome::ok)
            }
            "edit_file" => {
                let (path, shown) = self.path(input, "path")?;
                let old = string(input, "old_text")?;
                let new = string(input, "new_text")?;
                out.status(format!("editing {}", short(&shown))).await;
                files::edit(&path, &shown, old, new).map(Outcome::ok)
            }
            "list_files" => {
                let (path, shown) = self.optional_path(input)?;
                let recursive = input.get("recursive").and_then(Value::as_bool) == Some(true);
                out.status(format!("listing {}", short(&shown))).await;
                let workspace = self.workspace.clone();
                blocking(move || search::list(&workspace, &path, recursive)).await
            }
            "search_files" => {
                let query = string(input, "query")?.to_owned();
                let (path, _) = self.optional_path(input)?;
                let ignore_case = input.get("ignore_case").and_then(Value::as_bool) == Some(true);
                out.status(format!("searching for \"{}\"", short(&query)))
                    .await;
                let workspace = self.workspace.clone();
                blocking(move || search::search(&workspace, &path, &query, ignore_case)).await
            }
            "send_message" => {
                let text = string(input, "text")?;
                out.status("sending a message").await;
                out.message(text.to_owned()).await;
                Ok(Outcome::ok("Sent."))
            }
            "send_file" => {
                let (path, shown) = self.path(input, "path")?;
                out.status(format!("sending {}", short(&shown))).await;
                let meta = std::fs::metadata(&path).map_err(|err| format!("{shown}: {err}"))?;
                if !meta.is_file() {
                    return Err(format!("{shown} is not a file"));
                }
                out.file(self.workspace.relative(&path)).await;
                Ok(Outcome::ok(format!("Sent {shown} ({} bytes).", meta.len())))
            }
            "web_fetch" => {
                let url = string(input, "url")?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err("the URL must start with http:// or https://".into());
                }
                out.status(format!("fetching {}", short(url))).await;
                self.fetch(url).await.map(Outcome::ok)
            }
            name if tasks::NAMES.contains(&name) => tasks::run(&self.tunnel, name, input, out)
                .await
                .map(Outcome::ok),
            other => Err(format!("there is no tool called `{other}`")),
        }
    }

    /// A required path argument, resolved, and how to show it.
    fn path(&self, input: &Value, key: &str) -> Result<(PathBuf, String), String> {
        let given = string(input, key)?;
        let path = self
            .workspace
            .resolve(given)
            .map_err(|err| err.to_string())?;
        Ok((path.clone(), self.workspace.relative(&path)))
    }

    /// The optional `path` argument, the workspace by default.
    fn optional_path(&self, input: &Value) -> Result<(PathBuf, String), String> {
        match input.get("path").and_then(Value::as_str) {
            Some(_) => self.path(input, "path"),
            None => Ok((self.workspace.root().to_owned(), ".".into())),
        }
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        let request = Request::WebFetch { url: url.into() };
        let mut response = self
            .tunnel
            .send(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = match response.next().await.map_err(|err| err.to_string())? {
            ResponsePart::Head { status, .. } => status,
            ResponsePart::Failed { message } => return Err(format!("fetch failed: {message}")),
            _ => return Err("fetch failed: the answer had no status".into()),
        };
        let mut text = String::new();
        let mut cut = false;
        loop {
            match response.next().await.map_err(|err| err.to_string())? {
                ResponsePart::Body { data } => {
                    text.push_str(&data);
                    if text.len() > FETCH_CAP {
                        // Enough: dropping the response discards the rest as it arrives.
                        cut = true;
                        break;
                    }
                }
                ResponsePart::End => break,
                ResponsePart::Failed { message } => {
                    return Err(format!("fetch failed mid-way: {message}"))
                }
                ResponsePart::Head { .. } => break,
            }
        }
        let mut text = clip(&text, FETCH_CAP);
        if cut {
            text.push_str("\n[page cut here]");
        }
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(format!("HTTP {status}\n{text}"))
        }
    }
}

/// Run file-walking work off the runtime thread, so a big workspace cannot stall stdin.
async fn blocking(
    work: impl FnOnce() -> Result<String, String> + Send + 'static,
) -> Result<Outcome, String> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map(Outcome::ok),
        Err(err) => Err(format!("the tool failed: {err}")),
    }
}

/// A required string argument.
fn string<'a>(input: &'a Value, key: &str) -> Result<&'a str, String> {
    input
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string argument `{key}`"))
}

/// An optional whole-number argument (models sometimes send numbers as strings).
fn number(input: &Value, key: &str) -> Result<Option<u64>, String> {
    match input.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_u64()
            .or_else(|| number.as_f64().filter(|n| *n >= 0.0).map(|n| n as u64))
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a positive whole number")),
        Some(Value::String(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("`{key}` must be a positive whole number")),
        Some(_) => Err(format!("`{key}` must be a positive whole number")),
    }
}

/// A status line's subject, cut to [`STATUS_CHARS`].
fn short(text: &str) -> String {
    match text.char_indices().nth(STATUS_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::run::Step;
    use crate::tunnel::NO_PROGRESS;
    use std::path::Path;
    use tokio::sync::mpsc;

    struct Fixture {
        _dir: tempfile::TempDir,
        tools: Tools,
        out: Out,
        steps: mpsc::Receiver<Step>,
    }

    fn fixture() -> std::io::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let workspace = Workspace::open(dir.path())?;
        let (tunnel, _requests) = Tunnel::new(NO_PROGRESS);
        let (steps_in, steps) = mpsc::channel(64);
        Ok(Fixture {
            _dir: dir,
            tools: Tools::new(workspace, tunnel),
            out: Out::new(steps_in, 1024),
            steps,
        })
    }

    impl Fixture {
        async fn call(&mut self, name: &str, input: Value) -> Outcome {
            let call = ToolCall {
                id: "1".into(),
                name: name.into(),
                input,
            };
            self.tools.run(&call, &mut self.out).await
        }

        fn root(&self) -> &Path {
            self.tools.workspace.root()
        }
    }

    #[tokio::test]
    async fn files_are_written_read_and_edited() -> std::io::Result<()> {
        let mut fx = fixture()?;
        let written = fx
            .call(
                "write_file",
                json!({"path": "notes/a.md", "content": "one\ntwo\nthree\n"}),
            )
            .await;
        assert!(!written.is_error, "{written:?}");
        assert_eq!(
            fx.steps.recv().await,
            Some(Step::Status("writing notes/a.md".into()))
        );
        let read = fx.call("read_file", json!({"path": "notes/a.md"})).await;
        assert_eq!(read, Outcome::ok("one\ntwo\nthree\n"));
        let range = fx
            .call(
                "read_file",
                json!({"path": "notes/a.md", "start_line": 2, "max_lines": "1"}),
            )
            .await;
        assert_eq!(range, Outcome::ok("[lines 2–2 of 3]\ntwo"));

        let edited = fx
            .call(
                "edit_file",
                json!({"path": "notes/a.md", "old_text": "two", "new_text": "2"}),
            )
            .await;
        assert!(!edited.is_error, "{edited:?}");
        assert_eq!(
            std::fs::read_to_string(fx.root().join("notes/a.md"))?,
            "one\n2\nthree\n"
        );
        Ok(())
    }

    #[tokio::test]
    async fn paths_outside_the_workspace_are_tool_errors() -> std::io::Result<()> {
        let mut fx = fixture()?;
        for (tool, input) in [
            ("read_file", json!({"path": "/etc/passwd"})),
            (
                "write_file",
                json!({"path": "../escape.txt", "content": "x"}),
            ),
            ("send_file", json!({"path": "/etc/hostname"})),
            ("list_files", json!({"path": ".."})),
        ] {
            let outcome = fx.call(tool, input).await;
            assert!(outcome.is_error, "{tool}: {outcome:?}");
            assert!(
                outcome.content.contains("outside the workspace"),
                "{outcome:?}"
            );
        }
        assert!(!fx
            .root()
            .parent()
            .is_some_and(|parent| parent.join("escape.txt").exists()));
        Ok(())
    }

    #[tokio::test]
    async fn bad_arguments_and_unknown_tools_are_tool_errors() -> std::io::Result<()> {
        let mut fx = fixture()?;
        assert!(fx.call("read_file", Value::Null).await.is_error);
        assert!(fx
            .call("read_file", json!({}))
            .await
            .content
            .contains("`path`"));
        assert!(fx
            .call("launch", json!({}))
            .await
            .content
            .contains("no tool called"));
        assert!(
            fx.call("web_fetch", json!({"url": "file:///etc/passwd"}))
                .await
                .is_error
        );
        Ok(())
    }

    #[tokio::test]
    async fn messages_and_files_become_events() -> std::io::Result<()> {
        let mut fx = fixture()?;
        std::fs::write(fx.root().join("report.txt"), "r")?;
        fx.call("send_message", json!({"text": "working on it"}))
            .await;
        let sent = fx.call("send_file", json!({"path": "./report.txt"})).await;
        assert!(!sent.is_error, "{sent:?}");
        let mut steps = Vec::new();
        while let Ok(step) = fx.steps.try_recv() {
            steps.push(step);
        }
        assert_eq!(
            steps,
            vec![
                Step::Status("sending a message".into()),
                Step::Message("working on it".into()),
                Step::Status("sending report.txt".into()),
                Step::File("report.txt".into()),
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn shell_runs_in_the_workspace_with_a_status() -> std::io::Result<()> {
        let mut fx = fixture()?;
        let outcome = fx
            .call("shell", json!({"command": "echo hi > f.txt; cat f.txt"}))
            .await;
        assert_eq!(outcome, Outcome::ok("hi\n"));
        assert!(fx.root().join("f.txt").exists());
        assert_eq!(
            fx.steps.recv().await,
            Some(Step::Status("running: echo hi > f.txt; cat f.txt".into()))
        );
        Ok(())
    }
}
