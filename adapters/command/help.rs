//! `/help`: what the bot is, how to address it here, and its commands.

use super::{Origin, Outcome, Spec, ALL};

/// `/help`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Help;

impl Help {
    /// Its name.
    pub const NAME: &'static str = "help";

    /// How it presents itself.
    pub const SPEC: Spec = Spec {
        name: Self::NAME,
        menu: Some("What this bot does"),
        help: Some("this message"),
        argument: None,
    };

    /// The help text: the other commands first, `/help` itself last.
    pub fn text(origin: &Origin<'_>) -> String {
        let others = ALL.iter().filter(|spec| spec.name != Self::NAME);
        let lines: Vec<String> = others
            .chain([&Self::SPEC])
            .filter_map(|spec| spec.help.map(|line| format!("/{} — {line}", spec.name)))
            .collect();
        format!(
            "I am an AI agent with a sandbox of my own for this chat. {}\n\n{}",
            origin.addressing,
            lines.join("\n")
        )
    }

    /// Answers with [`Help::text`].
    pub fn apply(&self, origin: &Origin<'_>) -> Outcome {
        Outcome::Answer(Self::text(origin))
    }
}
