//! The engine's side of the warm pool: boxes started and attached ahead of need, each on a
//! fresh volume of its own, none bound to a conversation (the router's `pool` keeps them).
//!
//! # Identity
//!
//! Labels and mounts are fixed when a container or volume is created, and a pool box is
//! created before any conversation is known. So a pool box and its volume carry
//! [`spec::LABEL_INSTANCE`] and [`spec::LABEL_POOL`], never [`spec::LABEL_CONVERSATION`],
//! and are named `clawpen-<instance>-pool-<random>`. When a conversation claims one:
//!
//! 1. the store records the conversation → volume mapping, flushed, before anything can
//!    be written into the volume (a crash after that leaves the conversation its empty
//!    workspace; a crash before it leaves an unclaimed pool volume that never held a file);
//! 2. the container is renamed to the conversation's [`spec::container_name`], so that
//!    everything that finds a conversation's box by name (the next start, tests, tools)
//!    finds it;
//! 3. the first time that box is found stopped, it is replaced by an ordinary box on the
//!    same volume, labelled with its conversation (see `Sandbox::ensure_box_on`). Only the
//!    volume keeps its pool name and label for good.
//!
//! Whatever lists boxes or volumes by label (recovery, `clawpen status`, `clawpen gc`)
//! passes them through [`attribute`] with the store's mappings, which gives a claimed pool
//! box or volume its conversation. A pool box or volume that no mapping names was never
//! given to a conversation, holds nothing of anyone's, and is removed at the next start.

use std::collections::HashMap;

use bollard::query_parameters::RenameContainerOptions;
use clawpen_domain::{ContainerId, ConversationKey};

use super::spec::{self, Owner};
use super::{BoxConn, BoxInfo, Sandbox, SandboxError, VolumeInfo};
use crate::metrics::BoxStart;

/// A started, attached box of the warm pool, on its own fresh volume.
#[derive(Debug)]
pub struct WarmBox {
    /// Its attached stdin/stdout; nothing has been written to it yet.
    pub conn: BoxConn,
    /// Its container name (until claimed: `clawpen-<instance>-pool-<random>`).
    pub name: String,
    /// Its workspace volume, which becomes the claiming conversation's for good.
    pub volume: String,
}

impl WarmBox {
    /// Its container id.
    pub fn container(&self) -> &ContainerId {
        &self.conn.container
    }
}

impl Sandbox {
    /// Create, start and attach a box for the warm pool, on a fresh volume. Its agent runs
    /// with the operator's default settings; conversations with settings of their own do
    /// not take it (see [`Sandbox::fits_pool`]).
    pub async fn create_warm_box(&self) -> Result<WarmBox, SandboxError> {
        let id = clawpen_adapters::access::random_u64();
        let (name, volume) = spec::pool_names(&self.inner.instance, id);
        let labels = spec::pool_labels(&self.inner.instance);
        let created = async {
            let _permit = self.start_permit().await?;
            self.ensure_volume(&volume, labels).await?;
            let owner = Owner::Pool { workspace: &volume };
            let container = self.create_container(&name, owner, &self.inner.env).await?;
            self.start(&container).await?;
            self.attach(&ContainerId(container)).await
        }
        .await;
        match created {
            Ok(conn) => {
                self.metrics.box_started(BoxStart::Pooled);
                Ok(WarmBox { conn, name, volume })
            }
            Err(e) => {
                // Nothing of it may stay behind: it never served anyone.
                let _ = self
                    .remove_container(&ContainerId::from(name.as_str()))
                    .await;
                let _ = self.remove_volume(&volume).await;
                Err(e)
            }
        }
    }

    /// Remove a warm box that no conversation claimed, with its volume.
    pub async fn remove_warm_box(&self, warm: WarmBox) -> Result<(), SandboxError> {
        let WarmBox { conn, volume, .. } = warm;
        let container = conn.container.clone();
        drop(conn);
        self.remove_container(&container).await?;
        self.remove_volume(&volume).await
    }

    /// Give a claimed warm box its conversation's container name (see the module docs).
    /// The store must hold the conversation's mapping to the box's volume already.
    pub async fn rename_claimed(
        &self,
        warm: &WarmBox,
        conversation: &ConversationKey,
    ) -> Result<(), SandboxError> {
        let name = spec::container_name(&self.inner.instance, conversation);
        self.inner
            .docker
            .rename_container(warm.container().as_str(), RenameContainerOptions { name })
            .await
            .map_err(|e| SandboxError::from_engine("rename", &warm.name, e))?;
        self.metrics.box_started(BoxStart::Warm);
        Ok(())
    }

    /// Whether a warm box suits `conversation`: everything fixed at a box's creation (its
    /// environment: model and harness; the mounts and instructions are the same for every
    /// box) is what the conversation would get in a box of its own. A conversation with a
    /// model or harness of its own gets a cold box; its turns would carry the model, but
    /// the agent's own default (for turns it begins itself) and the harness are not
    /// changed after the start.
    pub fn fits_pool(&self, conversation: &ConversationKey) -> bool {
        self.agent_env(conversation) == self.inner.env
    }

    /// Whether the workspace volume named after `conversation` exists: a conversation that
    /// has one is not new, keeps its files, and never takes a warm box.
    pub async fn has_own_workspace(
        &self,
        conversation: &ConversationKey,
    ) -> Result<bool, SandboxError> {
        let name = spec::volume_name(&self.inner.instance, conversation);
        match self.inner.docker.inspect_volume(&name).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let err = SandboxError::from_engine("inspect volume", &name, e);
                if err.is_status(404) {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// Give claimed warm pool boxes and volumes their conversation, from the store's mappings
/// of conversations to the volumes they claimed (`claims`: volume → conversation). Boxes
/// and volumes with a conversation label are left as they are; a pool box or volume no
/// mapping names keeps `conversation: None`: an unclaimed leftover.
pub fn attribute(
    boxes: &mut [BoxInfo],
    volumes: &mut [VolumeInfo],
    claims: &HashMap<String, ConversationKey>,
) {
    for info in boxes
        .iter_mut()
        .filter(|b| b.pool && b.conversation.is_none())
    {
        info.conversation = info
            .workspace
            .as_ref()
            .and_then(|volume| claims.get(volume))
            .cloned();
    }
    for volume in volumes
        .iter_mut()
        .filter(|v| v.pool && v.conversation.is_none())
    {
        volume.conversation = claims.get(&volume.name).cloned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_pool_boxes_and_volumes_get_their_conversation_and_others_stay_as_they_are() {
        let key = ConversationKey::new("telegram", "1");
        let other = ConversationKey::new("telegram", "2");
        let a_box = |name: &str, conversation: Option<ConversationKey>, pool: bool| BoxInfo {
            id: ContainerId::from(name),
            name: name.into(),
            conversation,
            running: true,
            pool,
            workspace: Some(format!("{name}-ws")),
        };
        let mut boxes = vec![
            a_box("claimed", None, true),
            a_box("unclaimed", None, true),
            a_box("labelled", Some(other.clone()), false),
        ];
        let mut volumes = vec![
            VolumeInfo {
                name: "claimed-ws".into(),
                conversation: None,
                pool: true,
            },
            VolumeInfo {
                name: "unclaimed-ws".into(),
                conversation: None,
                pool: true,
            },
            VolumeInfo {
                name: "unlabelled-ws".into(),
                conversation: None,
                pool: false,
            },
        ];
        let claims = HashMap::from([
            ("claimed-ws".to_string(), key.clone()),
            // A mapping never makes a volume without the pool label someone's.
            ("unlabelled-ws".to_string(), key.clone()),
        ]);
        attribute(&mut boxes, &mut volumes, &claims);
        let owners: Vec<_> = boxes.iter().map(|b| b.conversation.clone()).collect();
        assert_eq!(owners, vec![Some(key.clone()), None, Some(other)]);
        let owners: Vec<_> = volumes.iter().map(|v| v.conversation.clone()).collect();
        assert_eq!(owners, vec![Some(key), None, None]);
    }
}
