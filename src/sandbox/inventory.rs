//! What boxes and workspace volumes this instance has, as the engine lists them (by the
//! instance label): for recovery after a restart, `clawpen status` and `gc`, and cleanup.

use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions};
use clawpen_domain::{ContainerId, ConversationKey};

use super::{spec, Sandbox, SandboxError};

/// A box as the engine lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxInfo {
    /// The container id.
    pub id: ContainerId,
    /// The container name.
    pub name: String,
    /// The conversation from its label (None when the label is unreadable, and for a warm
    /// pool box until [`attribute`](super::attribute) finds the conversation that claimed it).
    pub conversation: Option<ConversationKey>,
    /// Whether it runs now.
    pub running: bool,
    /// Whether it was started for the warm pool ([`spec::LABEL_POOL`]).
    pub pool: bool,
    /// The volume mounted as its workspace.
    pub workspace: Option<String>,
}

/// A workspace volume as the engine lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The volume name.
    pub name: String,
    /// The conversation from its label (None when the label is missing or unreadable, and
    /// for a warm pool volume until [`attribute`](super::attribute) finds the conversation that claimed it).
    pub conversation: Option<ConversationKey>,
    /// Whether it was made for the warm pool ([`spec::LABEL_POOL`]).
    pub pool: bool,
}

impl Sandbox {
    /// Every box of this instance, running or not.
    pub async fn list(&self) -> Result<Vec<BoxInfo>, SandboxError> {
        let filter = format!("{}={}", spec::LABEL_INSTANCE, self.inner.instance);
        let options = ListContainersOptions {
            all: true,
            filters: Some([("label".to_string(), vec![filter])].into_iter().collect()),
            ..Default::default()
        };
        let list = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| SandboxError::from_engine("list", "containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let labels = c.labels.unwrap_or_default();
                let conversation = labels
                    .get(spec::LABEL_CONVERSATION)
                    .and_then(|k| k.parse().ok());
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let running = matches!(
                    c.state,
                    Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                );
                let workspace = c.mounts.unwrap_or_default().into_iter().find_map(|m| {
                    (m.destination.as_deref() == Some(spec::WORKSPACE))
                        .then_some(m.name)
                        .flatten()
                });
                Some(BoxInfo {
                    id: ContainerId(id),
                    name,
                    conversation,
                    running,
                    pool: labels.contains_key(spec::LABEL_POOL),
                    workspace,
                })
            })
            .collect())
    }

    /// Every workspace volume of this instance.
    pub async fn volumes(&self) -> Result<Vec<VolumeInfo>, SandboxError> {
        let filter = format!("{}={}", spec::LABEL_INSTANCE, self.inner.instance);
        let options = ListVolumesOptions {
            filters: Some([("label".to_string(), vec![filter])].into_iter().collect()),
        };
        let volumes = self
            .inner
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| SandboxError::from_engine("list", "volumes", e))?;
        Ok(volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                conversation: v
                    .labels
                    .get(spec::LABEL_CONVERSATION)
                    .and_then(|k| k.parse().ok()),
                pool: v.labels.contains_key(spec::LABEL_POOL),
                name: v.name,
            })
            .collect())
    }

    /// Remove every box and volume of this instance (tests and `clawpen` uninstall paths).
    pub async fn remove_all(&self) -> Result<(), SandboxError> {
        for info in self.list().await? {
            self.remove_container(&info.id).await?;
        }
        for volume in self.volumes().await? {
            let _ = self.remove_volume(&volume.name).await;
        }
        Ok(())
    }
}
