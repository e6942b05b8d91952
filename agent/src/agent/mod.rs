//! The built-in agent: a model that answers chat turns and works in the box with tools.
//!
//! Each turn, the model gets the system prompt (with the operator's instructions and
//! `MEMORY.md`), the conversation's history, the new messages and the tools. It calls
//! tools as often as it needs and then answers; its text streams to the chat as it is
//! produced. Follow-ups that arrive meanwhile join at its next call. The turn runs as a
//! task ([`TaskRun`]), so `Cancel` and the turn's time limit stop it wherever it is.
//!
//! # Layout
//!
//! - `prompt`: the system prompt and the chat messages as text.
//! - `memory`: the history file, and its compaction into a summary.
//! - `tools`: the tools offered to the model; `fs` (paths confined to the workspace),
//!   `files` (read, write, edit), `shell` (commands with timeouts and process groups),
//!   `search` (list and search), `tasks` (scheduled tasks, kept by the bridge).

mod files;
mod fs;
mod memory;
mod prompt;
mod search;
mod shell;
mod tasks;
mod tools;

use std::path::PathBuf;
use std::sync::Arc;

use clawpen_protocol::{TurnMessage, TurnOptions};

use crate::config::{Config, Limits};
use crate::provider::call::Model;
use crate::provider::run::{Inbox, Out, TaskRun, TurnResult};
use crate::provider::wire::{Format, Message, ModelRequest, ToolResult, ToolSpec};
use crate::tunnel::Tunnel;
use fs::Workspace;
use memory::{split_point, transcript, Entry, History};
use tools::Tools;

/// A message with exactly this text clears the history (not `MEMORY.md`).
pub const RESET: &str = "/reset";

/// The answer to [`RESET`].
pub const RESET_REPLY: &str = "History cleared; MEMORY.md is kept.";

/// Said when a turn ends without any visible answer, so the chat never shows nothing.
const NO_ANSWER: &str = "(no answer)";

/// The agent, shared by its turns; cheap to clone.
#[derive(Clone, Debug)]
pub struct Agent {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    model: Model,
    /// `CLAWPEN_MODEL`, if set.
    default_model: Option<String>,
    workspace: Workspace,
    instructions: PathBuf,
    limits: Limits,
    tools: Tools,
    specs: Vec<ToolSpec>,
}

impl Agent {
    /// An agent speaking `format` through `tunnel`, working in the configured workspace
    /// (created if missing).
    pub fn new(format: Format, config: &Config, tunnel: Tunnel) -> std::io::Result<Agent> {
        let workspace = Workspace::open(&config.workspace)?;
        let shared = Shared {
            model: Model::new(tunnel.clone(), format),
            default_model: config.model.clone(),
            tools: Tools::new(workspace.clone(), tunnel),
            workspace,
            instructions: config.instructions.clone(),
            limits: config.limits.clone(),
            specs: tools::specs(),
        };
        Ok(Agent {
            shared: Arc::new(shared),
        })
    }

    /// The provider name, as reported in `Ready`.
    pub fn name(&self) -> &'static str {
        self.shared.model.format().name()
    }

    /// Start answering a turn.
    pub fn start(&self, messages: Vec<TurnMessage>, options: TurnOptions) -> TaskRun {
        let agent = self.clone();
        let limits = &self.shared.limits;
        TaskRun::spawn(limits.turn_time, limits.max_output, move |out, inbox| {
            agent.turn(messages, options, out, inbox)
        })
    }

    async fn turn(
        self,
        messages: Vec<TurnMessage>,
        options: TurnOptions,
        mut out: Out,
        inbox: Inbox,
    ) -> TurnResult {
        let shared = &self.shared;
        let model = options
            .model
            .or_else(|| shared.default_model.clone())
            .unwrap_or_else(|| shared.model.format().default_model().to_owned());
        let mut history = History::load(shared.workspace.root());
        if messages.iter().any(|message| message.text.trim() == RESET) {
            history
                .clear()
                .map_err(|err| format!("could not clear the history: {err}"))?;
            return out.text(RESET_REPLY).await.map_err(|full| full.to_string());
        }
        self.compact(&mut history, &model, &mut out).await;
        history.push(Entry::User {
            text: prompt::messages(&messages, false),
        });
        let system = prompt::system(&prompt::Context {
            workspace: shared.workspace.root(),
            instructions: &shared.instructions,
            model: &model,
            now: prompt::now(),
        });
        let mut visible = false;
        for _ in 0..shared.limits.max_steps {
            let follow_ups = inbox.take();
            if !follow_ups.is_empty() {
                history.push(Entry::User {
                    text: prompt::messages(&follow_ups, true),
                });
            }
            let messages = history.messages();
            let request = ModelRequest {
                model: &model,
                system: &system,
                messages: &messages,
                tools: &shared.specs,
                max_tokens: shared.limits.max_tokens,
            };
            let reply = shared.model.call(&request, &mut out, true).await?;
            eprintln!(
                "clawpen-agent: model call: {} tokens in, {} out, stop: {}",
                reply.usage.input,
                reply.usage.output,
                reply.stop_reason.as_deref().unwrap_or("?")
            );
            history.push(Entry::Assistant {
                text: reply.text.clone(),
                calls: reply.calls.clone(),
            });
            if reply.calls.is_empty() {
                if matches!(reply.stop_reason.as_deref(), Some("max_tokens" | "length")) {
                    out.paragraph();
                    out.text("(the answer was cut off at the model's output limit)")
                        .await
                        .map_err(|full| full.to_string())?;
                }
                if inbox.is_empty() {
                    if out.written() == 0 && !visible {
                        out.text(NO_ANSWER).await.map_err(|full| full.to_string())?;
                    }
                    return Ok(());
                }
                // Follow-ups came during the last call: the next one answers them.
            }
            for call in &reply.calls {
                visible |= matches!(call.name.as_str(), "send_message" | "send_file");
                let outcome = shared.tools.run(call, &mut out).await;
                history.push(Entry::Tool(ToolResult {
                    id: call.id.clone(),
                    content: outcome.content,
                    is_error: outcome.is_error,
                }));
            }
            out.paragraph();
        }
        Err(format!(
            "this turn reached its limit of {} model calls (CLAWPEN_MAX_STEPS); say \"continue\" to let me go on",
            shared.limits.max_steps
        ))
    }

    /// Summarize the older part of the history once it is over its budget. A failure is
    /// reported as a status and the turn goes on with the full history.
    async fn compact(&self, history: &mut History, model: &str, out: &mut Out) {
        let budget = self.shared.limits.history_tokens;
        if history.tokens() <= budget {
            return;
        }
        let Some(split) = split_point(history.entries(), budget) else {
            return;
        };
        out.status("summarizing older history").await;
        let messages = [Message::user(format!(
            "Here is the earlier part of the conversation:\n\n{}\nWrite the summary now.",
            transcript(&history.entries()[..split])
        ))];
        let request = ModelRequest {
            model,
            system: prompt::COMPACT,
            messages: &messages,
            tools: &[],
            max_tokens: self.shared.limits.max_tokens,
        };
        match self.shared.model.call(&request, out, false).await {
            Ok(reply) if !reply.text.trim().is_empty() => {
                if let Err(err) = history.summarize(split, reply.text) {
                    eprintln!("clawpen-agent: cannot store the summarized history: {err}");
                }
            }
            Ok(_) => eprintln!("clawpen-agent: the history summary came back empty"),
            Err(message) => {
                eprintln!("clawpen-agent: cannot summarize the history: {message}");
                out.status(format!("could not summarize older history: {message}"))
                    .await;
            }
        }
    }
}
