//! Chat commands, in one place for every adapter: `/help`, `/status`, `/stop`, `/reset`,
//! Telegram's `/start`, and the scheduled-task commands `/tasks`, `/pause`, `/resume`,
//! `/cancel`, `/run` and `/tz` (worded in `tasks`, carried out by the core's scheduler).
//!
//! A command is parsed once from a message's text ([`parse`]), then applied
//! ([`Command::apply`]); each command is a type in a file of its own (the model is
//! mini-redis's `cmd/`). What a command answers is worded here, so the terminal, Telegram and
//! any later adapter say the same thing; what it does to a conversation (cancel its turn,
//! report its state) the router carries out through the [`InboundSink`]. An adapter only
//! registers [`menu`] with its platform (Telegram: `setMyCommands`) and sends the answer.
//!
//! A command the bridge does not answer itself (`/reset`, or a name it does not know) is an
//! ordinary message for the agent, with any `@bot` suffix removed.

use crate::{Accepted, ConversationKey, Inbound, InboundSink, SinkError};

mod cancel;
mod help;
mod pause;
mod reset;
mod resume;
mod run;
mod start;
mod status;
mod stop;
mod tasks;
mod tz;

pub use cancel::Cancel;
pub use help::Help;
pub use pause::Pause;
pub use reset::Reset;
pub use resume::Resume;
pub use run::Run;
pub use start::Start;
pub use status::Status;
pub use stop::Stop;
pub use tasks::{words as task_words, Caller, TaskLine, TaskReply, TaskRequest, Tasks};
pub use tz::Tz;

/// How one command presents itself: its name, its line in a platform's command menu, and
/// its line in `/help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The name, without the slash.
    pub name: &'static str,
    /// Shown in a platform's command menu (Telegram's `setMyCommands`); `None`: unlisted.
    pub menu: Option<&'static str>,
    /// Its line in `/help`, after `/name — `; `None`: not mentioned.
    pub help: Option<&'static str>,
    /// What follows the name, for platforms whose menus take arguments apart (Discord's
    /// slash command options); `None`: nothing.
    pub argument: Option<&'static str>,
}

/// Every command, in the order platform menus show them.
pub const ALL: &[Spec] = &[
    Help::SPEC,
    Status::SPEC,
    Stop::SPEC,
    Reset::SPEC,
    Tasks::SPEC,
    Pause::SPEC,
    Resume::SPEC,
    Cancel::SPEC,
    Run::SPEC,
    Tz::SPEC,
    Start::SPEC,
];

/// The commands a platform should offer in its menu, as (name, description), in order.
pub fn menu() -> impl Iterator<Item = (&'static str, &'static str)> {
    ALL.iter()
        .filter_map(|spec| spec.menu.map(|menu| (spec.name, menu)))
}

/// The command named `name` (without the slash), if the bridge knows it.
pub fn spec(name: &str) -> Option<&'static Spec> {
    ALL.iter().find(|spec| spec.name == name)
}

/// A command the bridge knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/start`: a chat's first message on Telegram; answered like `/help`.
    Start(Start),
    /// `/help`: what the bot is and its commands.
    Help(Help),
    /// `/status`: what this conversation's box is doing.
    Status(Status),
    /// `/stop`: end the running turn.
    Stop(Stop),
    /// `/reset`: carried out by the agent, which forgets the history.
    Reset(Reset),
    /// `/tasks`: the scheduled tasks.
    Tasks(Tasks),
    /// `/pause ID`.
    Pause(Pause),
    /// `/resume ID`.
    Resume(Resume),
    /// `/cancel ID`.
    Cancel(Cancel),
    /// `/run ID`.
    Run(Run),
    /// `/tz [ZONE]`.
    Tz(Tz),
}

/// Where a command was given, as far as its answer needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// The conversation it was given in.
    pub conversation: &'a ConversationKey,
    /// How to address the bot here, one sentence ("Write to me here.", "Mention @bot or
    /// reply to me."): the platform knows, `/help` says it.
    pub addressing: &'a str,
    /// The sender's platform user id (task commands check who may change what).
    pub sender: &'a str,
}

/// What an adapter does once a command was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answer with this text; nothing reaches the agent.
    Answer(String),
    /// Hand the message to the sink like any other; the agent carries it out.
    Forward,
}

impl Command {
    /// The command called `name` (lower case, no slash) with these arguments, if the
    /// bridge knows it.
    fn from_name(name: &str, args: &str) -> Option<Self> {
        let args = args.to_string();
        match name {
            Start::NAME => Some(Self::Start(Start)),
            Help::NAME => Some(Self::Help(Help)),
            Status::NAME => Some(Self::Status(Status)),
            Stop::NAME => Some(Self::Stop(Stop)),
            Reset::NAME => Some(Self::Reset(Reset)),
            Tasks::NAME => Some(Self::Tasks(Tasks { args })),
            Pause::NAME => Some(Self::Pause(Pause { args })),
            Resume::NAME => Some(Self::Resume(Resume { args })),
            Cancel::NAME => Some(Self::Cancel(Cancel { args })),
            Run::NAME => Some(Self::Run(Run { args })),
            Tz::NAME => Some(Self::Tz(Tz { args })),
            _ => None,
        }
    }

    /// Its name, without the slash.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start(_) => Start::NAME,
            Self::Help(_) => Help::NAME,
            Self::Status(_) => Status::NAME,
            Self::Stop(_) => Stop::NAME,
            Self::Reset(_) => Reset::NAME,
            Self::Tasks(_) => Tasks::NAME,
            Self::Pause(_) => Pause::NAME,
            Self::Resume(_) => Resume::NAME,
            Self::Cancel(_) => Cancel::NAME,
            Self::Run(_) => Run::NAME,
            Self::Tz(_) => Tz::NAME,
        }
    }

    /// Carries the command out: acts on the conversation through `sink` where it must, and
    /// says what to answer.
    pub async fn apply(&self, sink: &dyn InboundSink, origin: &Origin<'_>) -> Outcome {
        match self {
            Self::Start(cmd) => cmd.apply(origin),
            Self::Help(cmd) => cmd.apply(origin),
            Self::Status(cmd) => cmd.apply(sink, origin).await,
            Self::Stop(cmd) => cmd.apply(sink, origin).await,
            Self::Reset(cmd) => cmd.apply(),
            Self::Tasks(cmd) => cmd.apply(sink, origin).await,
            Self::Pause(cmd) => cmd.apply(sink, origin).await,
            Self::Resume(cmd) => cmd.apply(sink, origin).await,
            Self::Cancel(cmd) => cmd.apply(sink, origin).await,
            Self::Run(cmd) => cmd.apply(sink, origin).await,
            Self::Tz(cmd) => cmd.apply(sink, origin).await,
        }
    }
}

/// What a message's text is, as far as commands go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a command for this bot: plain text, or a command addressed to another bot
    /// (`/stop@OtherBot` in a group is chatter).
    Text,
    /// A command for this bot, known or not.
    Command {
        /// The message as the agent should see it: `/name args`, the name in lower case,
        /// without the `@bot` suffix.
        text: String,
        /// What the bridge does with it; `None` for a name it does not know (the agent
        /// gets it as text).
        command: Option<Command>,
    },
}

/// Parses `/name@bot args`. `bot` is this bot's user name on platforms where a command
/// may name the bot it is for (Telegram, in groups); the suffix is compared without regard
/// to case. Where there is no such name (the terminal), a command naming any bot is text.
pub fn parse(text: &str, bot: Option<&str>) -> Parsed {
    let Some(body) = text.trim_start().strip_prefix('/') else {
        return Parsed::Text;
    };
    let (word, args) = body
        .split_once(char::is_whitespace)
        .map_or((body, ""), |(w, r)| (w, r.trim()));
    let (name, target) = word
        .split_once('@')
        .map_or((word, None), |(n, t)| (n, Some(t)));
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let ours = match (target, bot) {
        (None, _) => true,
        (Some(target), Some(bot)) => target.eq_ignore_ascii_case(bot),
        (Some(_), None) => false,
    };
    if !(valid && ours) {
        return Parsed::Text;
    }
    let name = name.to_ascii_lowercase();
    let command = Command::from_name(&name, args);
    let text = match args.is_empty() {
        true => format!("/{name}"),
        false => format!("/{name} {args}"),
    };
    Parsed::Command { text, command }
}

/// What became of a message an adapter handled through [`handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The sink took it (for the agent).
    Accepted(Accepted),
    /// A command answered by the bridge: the adapter shows this text.
    Answer(String),
}

/// Carries out a message that passed access control: a command the bridge answers is
/// applied, anything else goes to the sink. `command` comes from [`parse`] of the message's
/// text (whose normalized form `message.text` should already hold).
pub async fn handle(
    sink: &dyn InboundSink,
    message: Inbound,
    command: Option<&Command>,
    addressing: &str,
) -> Result<Handled, SinkError> {
    if let Some(command) = command {
        let origin = Origin {
            conversation: &message.conversation,
            addressing,
            sender: &message.sender_id,
        };
        if let Outcome::Answer(text) = command.apply(sink, &origin).await {
            return Ok(Handled::Answer(text));
        }
    }
    sink.accept(message).await.map(Handled::Accepted)
}

#[cfg(test)]
pub(crate) mod tests;
