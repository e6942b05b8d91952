//! One gateway event, in order: READY and channel events update what the adapter knows;
//! a message or slash command goes through the shared [`crate::access`] gate, then
//! [`crate::command::handle`], to the sink. What is Discord's here is where a message was
//! written (DM, channel, thread), opening a thread per mention, and answering interactions.

use std::sync::Arc;

use serde_json::json;
use serenity::builder::{
    CreateCommand, CreateCommandOption, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateThread,
};
use serenity::http::{LightMethod, Request, Route};
use serenity::model::application::CommandOptionType;
use serenity::model::id::{ApplicationId, ChannelId, InteractionId, MessageId};

use super::adapter::{snowflake, ChannelInfo, DiscordAdapter, OWN_BACKOFF};
use super::inbound::{self, Identity, Place, Translated, ARGUMENT};
use super::wire::{self, Event, Interaction, Message};
use super::PLATFORM;
use crate::access::{Admission, Sender, REFUSAL};
use crate::command::{self, Command, Handled};
use crate::stream::retry;
use crate::{ConversationKey, Inbound, InboundSink, MessageRef, SinkError};

/// The longest thread name Discord accepts.
const THREAD_NAME_LEN: usize = 100;

/// Interaction type of a slash command.
const APPLICATION_COMMAND: u8 = 2;

impl DiscordAdapter {
    /// Handles one event. An error means the sink could not take a message.
    pub(super) async fn handle(
        self: &Arc<Self>,
        sink: &dyn InboundSink,
        event: Event,
    ) -> Result<(), SinkError> {
        match event {
            Event::Ready(ready) => {
                let first = self.me.get().is_none();
                let _ = self.me.set(Identity {
                    id: ready.user.id.clone(),
                    username: ready.user.username.clone(),
                });
                if let Some(app) = ready.application {
                    let _ = self.application.set(app.id);
                }
                if first {
                    let this = self.clone();
                    self.tasks
                        .spawn(async move { this.register_commands().await });
                }
            }
            Event::Channel(channel) => self.learn(&channel),
            Event::Guild(guild) => guild.threads.iter().for_each(|t| self.learn(t)),
            Event::Threads(list) => list.threads.iter().for_each(|t| self.learn(t)),
            Event::Message(message) => return self.on_message(sink, &message).await,
            Event::Interaction(interaction) => {
                return self.on_interaction(sink, &interaction).await
            }
            Event::Resumed | Event::Ignored | Event::Unknown => {}
        }
        Ok(())
    }

    fn learn(&self, channel: &wire::Channel) {
        let ours = self
            .me
            .get()
            .is_some_and(|me| channel.owner_id.as_deref() == Some(me.id.as_str()));
        let parent = channel.parent_id.clone().filter(|_| channel.is_thread());
        self.learn_channel(&channel.id, ChannelInfo { parent, ours });
    }

    /// Where a message of `channel` was written: a DM has no guild; a guild channel is a
    /// thread or not, as the gateway said or, for one it never mentioned, as
    /// `GET /channels/{id}` says.
    async fn place(&self, channel: &str, guild: Option<&str>) -> Place {
        let private = guild.is_none();
        let mut info = ChannelInfo::default();
        if !private {
            info = match self.channel_info(channel) {
                Some(info) => info,
                None => self.look_up(channel).await,
            };
        }
        Place {
            channel: channel.to_string(),
            parent: info.parent,
            private,
            ours: info.ours,
        }
    }

    async fn look_up(&self, channel: &str) -> ChannelInfo {
        let Ok(id) = snowflake(channel) else {
            return ChannelInfo::default();
        };
        let route = Route::Channel {
            channel_id: ChannelId::from(id),
        };
        let request = || {
            let request = Request::new(route, LightMethod::Get);
            self.rest.json::<wire::Channel>(request, None)
        };
        match retry(&OWN_BACKOFF, &channel, request).await {
            Ok(found) => {
                self.learn(&found);
                self.channel_info(channel).unwrap_or_default()
            }
            Err(error) => {
                // Taken for a plain channel this once; asked again next time.
                tracing::warn!(adapter = PLATFORM, channel, %error, "could not tell whether a channel is a thread");
                ChannelInfo::default()
            }
        }
    }

    async fn on_message(
        self: &Arc<Self>,
        sink: &dyn InboundSink,
        message: &Message,
    ) -> Result<(), SinkError> {
        let Some(me) = self.me.get() else {
            return Ok(());
        };
        if message.author.id == me.id {
            return Ok(());
        }
        let place = self
            .place(&message.channel_id, message.guild_id.as_deref())
            .await;
        let (mut inbound, command) = match inbound::translate(message, me, &place) {
            Translated::Message(inbound, command) => (*inbound, command),
            Translated::Skip(why) => {
                tracing::debug!(adapter = PLATFORM, message = %message.id, why, "skipping a message");
                return Ok(());
            }
        };
        let roles = message
            .member
            .as_ref()
            .map(|m| m.roles.clone())
            .unwrap_or_default();
        let answer = match self.admit(sink, &inbound, &place, &roles).await {
            Admission::Allowed => {
                let opens_thread = self.config.thread_per_mention
                    && inbound.addressed
                    && command.is_none()
                    && !place.private
                    && place.parent.is_none();
                if opens_thread {
                    if let Some(thread) = self.open_thread(&place.channel, &inbound).await {
                        inbound.conversation =
                            ConversationKey::new(PLATFORM, &place.channel).with_thread(thread);
                    }
                }
                let addressing = addressing(&place, me);
                match command::handle(sink, inbound.clone(), command.as_ref(), &addressing).await? {
                    Handled::Accepted(_) => return Ok(()),
                    Handled::Answer(text) => text,
                }
            }
            Admission::Answer(text) => text.to_string(),
            Admission::Drop => return Ok(()),
        };
        self.notice(inbound.conversation, answer, Some(MessageRef(inbound.id)));
        Ok(())
    }

    async fn admit(
        &self,
        sink: &dyn InboundSink,
        inbound: &Inbound,
        place: &Place,
        roles: &[String],
    ) -> Admission {
        let sender = Sender {
            user: &inbound.sender_id,
            chat: place.allowlist_channel(),
            roles,
            private: place.private,
            addressed: inbound.addressed,
        };
        self.gate.admit(sink, &sender, &inbound.text).await
    }

    /// Opens a thread on `inbound` for its answer; `None` (answer in the channel) if
    /// Discord refuses.
    async fn open_thread(&self, channel: &str, inbound: &Inbound) -> Option<String> {
        let channel_id = ChannelId::from(snowflake(channel).ok()?);
        let message_id = MessageId::from(snowflake(&inbound.id).ok()?);
        let builder = CreateThread::new(thread_name(&inbound.text));
        let body = serde_json::to_vec(&builder).ok()?;
        let route = Route::ChannelMessageThreads {
            channel_id,
            message_id,
        };
        let request = || {
            let request = Request::new(route, LightMethod::Post).body(Some(body.clone()));
            self.rest.json::<wire::Channel>(request, Some(channel))
        };
        match retry(&OWN_BACKOFF, &channel, request).await {
            Ok(thread) => {
                let info = ChannelInfo {
                    parent: Some(channel.to_string()),
                    ours: true,
                };
                self.learn_channel(&thread.id, info);
                Some(thread.id)
            }
            Err(error) => {
                tracing::warn!(adapter = PLATFORM, channel, %error, "could not open a thread; answering in the channel");
                None
            }
        }
    }

    async fn on_interaction(
        self: &Arc<Self>,
        sink: &dyn InboundSink,
        interaction: &Interaction,
    ) -> Result<(), SinkError> {
        if interaction.kind != APPLICATION_COMMAND {
            tracing::debug!(
                adapter = PLATFORM,
                kind = interaction.kind,
                "ignoring an interaction that is not a slash command"
            );
            return Ok(());
        }
        // Discord drops an interaction not acknowledged within 3 s: defer first.
        if let Err(error) = self.defer(interaction).await {
            tracing::warn!(adapter = PLATFORM, %error, "could not acknowledge a slash command");
            return Ok(());
        }
        let Some(me) = self.me.get() else {
            return Ok(());
        };
        let channel = interaction
            .channel
            .as_ref()
            .map(|c| c.id.clone())
            .or_else(|| interaction.channel_id.clone())
            .unwrap_or_default();
        if let Some(found) = interaction.channel.as_ref().filter(|c| c.is_thread()) {
            self.learn(found);
        }
        let place = self.place(&channel, interaction.guild_id.as_deref()).await;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some((inbound, command)) = inbound::interaction(interaction, &place, at) else {
            self.follow_up(interaction, "That command needs a prompt.".into());
            return Ok(());
        };
        let roles = interaction
            .member
            .as_ref()
            .map(|m| m.roles.clone())
            .unwrap_or_default();
        let answer = match self.admit(sink, &inbound, &place, &roles).await {
            Admission::Allowed => {
                let shown = shown_request(&inbound, command.as_ref());
                let addressing = addressing(&place, me);
                match command::handle(sink, inbound, command.as_ref(), &addressing).await? {
                    Handled::Accepted(_) => shown,
                    Handled::Answer(text) => text,
                }
            }
            Admission::Answer(text) => text.to_string(),
            // A slash command always gets an answer, even from a stranger refused lately.
            Admission::Drop => REFUSAL.to_string(),
        };
        self.follow_up(interaction, answer);
        Ok(())
    }

    /// Acknowledges a slash command (a "thinking…" response, filled in later).
    async fn defer(&self, interaction: &Interaction) -> Result<(), crate::AdapterError> {
        let id = InteractionId::from(snowflake(&interaction.id)?);
        let response = CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new());
        let body = serde_json::to_vec(&response)
            .map_err(|e| crate::AdapterError::Rejected(e.to_string()))?;
        let route = Route::InteractionResponse {
            interaction_id: id,
            token: &interaction.token,
        };
        let call = || {
            let request = Request::new(route, LightMethod::Post).body(Some(body.clone()));
            self.rest.call(request, None)
        };
        retry(&OWN_BACKOFF, &"interaction", call).await.map(|_| ())
    }

    /// Fills in a deferred slash command's response with `text`, beside the handler.
    fn follow_up(self: &Arc<Self>, interaction: &Interaction, text: String) {
        let (this, application, token) = (
            self.clone(),
            interaction.application_id.clone(),
            interaction.token.clone(),
        );
        self.tasks.spawn(async move {
            let Ok(app) = snowflake(&application) else {
                return;
            };
            let body = json!({"content": text, "allowed_mentions": this.allowed_mentions()});
            let route = Route::WebhookOriginalInteractionResponse {
                application_id: ApplicationId::from(app),
                token: &token,
            };
            let call = || {
                let request = Request::new(route, LightMethod::Patch)
                    .body(Some(body.to_string().into_bytes()));
                this.rest.call(request, None)
            };
            if let Err(error) = retry(&OWN_BACKOFF, &"interaction", call).await {
                tracing::warn!(adapter = PLATFORM, %error, "could not answer a slash command");
            }
        });
    }

    /// Sends the adapter's own short answer beside the handler, retried as
    /// [`OWN_BACKOFF`] says; dropped with a log line if Discord keeps refusing.
    fn notice(
        self: &Arc<Self>,
        conversation: ConversationKey,
        text: String,
        reply_to: Option<MessageRef>,
    ) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let send = || crate::Adapter::send(&*this, &conversation, &text, reply_to.as_ref());
            if let Err(error) = retry(&OWN_BACKOFF, &conversation, send).await {
                tracing::warn!(adapter = PLATFORM, %conversation, %error, "could not send a notice");
            }
        });
    }

    /// Registers the slash commands: `/ask` and the shared chat commands.
    async fn register_commands(&self) {
        let Some(app) = self.application.get().and_then(|a| snowflake(a).ok()) else {
            tracing::warn!(
                adapter = PLATFORM,
                "READY named no application; slash commands not registered"
            );
            return;
        };
        let prompt = CreateCommandOption::new(CommandOptionType::String, "prompt", "What to ask")
            .required(true);
        let ask = CreateCommand::new("ask")
            .description("Ask the agent")
            .add_option(prompt);
        let commands: Vec<CreateCommand> = std::iter::once(ask)
            .chain(command::menu().map(|(name, about)| {
                let command = CreateCommand::new(name).description(about);
                match command::spec(name).and_then(|spec| spec.argument) {
                    Some(argument) => command.add_option(CreateCommandOption::new(
                        CommandOptionType::String,
                        ARGUMENT,
                        argument,
                    )),
                    None => command,
                }
            }))
            .collect();
        let Ok(body) = serde_json::to_vec(&commands) else {
            return;
        };
        let route = Route::Commands {
            application_id: ApplicationId::from(app),
        };
        let call = || {
            let request = Request::new(route, LightMethod::Put).body(Some(body.clone()));
            self.rest.call(request, None)
        };
        if let Err(error) = retry(&OWN_BACKOFF, &"commands", call).await {
            tracing::warn!(adapter = PLATFORM, %error, "could not register the slash commands");
        }
    }
}

/// How to address the bot here, for `/help`.
fn addressing(place: &Place, me: &Identity) -> String {
    if place.private || place.ours {
        "Write to me here.".into()
    } else {
        format!("Mention @{} or reply to me, or use /ask.", me.username)
    }
}

/// What a slash command's response shows once its message was taken: the request.
fn shown_request(inbound: &Inbound, command: Option<&Command>) -> String {
    match command {
        Some(command) => format!("/{}", command.name()),
        None => {
            let quoted: Vec<String> = inbound.text.lines().map(|l| format!("> {l}")).collect();
            let mut shown = quoted.join("\n");
            if shown.chars().count() > 1900 {
                shown = shown.chars().take(1900).collect::<String>() + "…";
            }
            shown
        }
    }
}

/// A thread's name from the request that opened it: its first line, at most
/// [`THREAD_NAME_LEN`] characters.
pub(super) fn thread_name(request: &str) -> String {
    let line = request
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("Question");
    if line.chars().count() <= THREAD_NAME_LEN {
        return line.to_string();
    }
    let mut name: String = line.chars().take(THREAD_NAME_LEN - 1).collect();
    name.push('…');
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_are_the_first_line_within_the_limit() {
        assert_eq!(thread_name("\n  fix the build\nplease"), "fix the build");
        let long = "é".repeat(300);
        let name = thread_name(&long);
        assert_eq!(name.chars().count(), THREAD_NAME_LEN);
        assert!(name.ends_with('…'));
        assert_eq!(thread_name("  "), "Question");
    }
}
