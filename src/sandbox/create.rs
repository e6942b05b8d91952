//! Creating and starting boxes: a conversation's, on its workspace, with the engine asked
//! to create or start only a few at once.
//!
//! Hot path: a cold start of a new conversation's box runs here (volume, create, start);
//! nothing but those three engine calls and the wait for a start permit belongs on it.

use std::sync::atomic::{AtomicUsize, Ordering};

use bollard::models::{ContainerStateStatusEnum, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptions, InspectContainerOptions};
use clawpen_domain::{ContainerId, ConversationKey};
use tokio::sync::SemaphorePermit;

use super::seccomp::Seccomp;
use super::spec::{self, AgentEnv, BoxSpec, Owner};
use super::{Sandbox, SandboxError, Started};
use crate::metrics::BoxStart;

/// The most boxes the engine is asked to create or start at once. The engine serialises
/// much of that work, so more at once only makes every one of them slower; with a few at
/// once the engine stays busy and each waiting conversation starts as soon as it can.
/// Further starts wait in a fair (first come, first served) queue, counted in
/// [`Sandbox::starts_waiting`] for `clawpen status` and the metrics. Measured with a burst
/// of 40 new conversations on the 2-core development machine (busy with other builds, so
/// only the comparison counts), first reply p50 / p99: 1 at once 3.4 / 6.8 s, 2 at once
/// 2.2–2.9 / 4.7–5.5 s, 4 at once 1.6–1.8 / 2.9–3.3 s, 8 at once the same, and unbounded
/// (64) 2.8–3.1 / 3.2–3.7 s: past 4 nothing is gained, and unbounded, every conversation
/// waits for the slowest (`cargo run --release --example bench -- pool 0 40`).
pub const STARTS_AT_ONCE: usize = 4;

impl Sandbox {
    /// Make sure the box of `conversation` exists and runs: create its volume and container
    /// if missing, start it if stopped. Its workspace is the volume named after it.
    pub async fn ensure_box(
        &self,
        conversation: &ConversationKey,
    ) -> Result<Started, SandboxError> {
        let workspace = spec::volume_name(&self.inner.instance, conversation);
        self.ensure_box_on(conversation, &workspace).await
    }

    /// [`Sandbox::ensure_box`] on the workspace volume `workspace`: the one named after the
    /// conversation, or the one it claimed from the warm pool (the store knows which).
    pub async fn ensure_box_on(
        &self,
        conversation: &ConversationKey,
        workspace: &str,
    ) -> Result<Started, SandboxError> {
        let name = spec::container_name(&self.inner.instance, conversation);
        match self.find(&name).await? {
            Some(found) if found.running => {
                self.metrics.box_started(BoxStart::Adopted);
                Ok(Started {
                    container: ContainerId(found.id),
                    fresh: false,
                })
            }
            Some(found) if found.pool => {
                // A warm pool box this conversation claimed, stopped since. It is replaced
                // by an ordinary box on the same workspace, so that from its second start
                // on the conversation's box carries its conversation label like any other.
                self.remove_container(&ContainerId(found.id)).await?;
                self.create_box(conversation, workspace, &name).await
            }
            Some(found) => {
                self.stopped_for().remove(&found.id);
                if self.outdated(&found.id).await? {
                    // Made before the current hardening (without the seccomp profile, or
                    // with another): made again. Its root is read-only and its /tmp went
                    // with the stop, so only the container goes; the workspace stays.
                    tracing::info!(conversation = %conversation, r#box = %found.id, "the box's security options are out of date; making it again");
                    self.remove_container(&ContainerId(found.id)).await?;
                    return self.create_box(conversation, workspace, &name).await;
                }
                let _permit = self.start_permit().await?;
                self.start(&found.id).await?;
                self.metrics.box_started(BoxStart::Resumed);
                Ok(Started {
                    container: ContainerId(found.id),
                    fresh: true,
                })
            }
            None => self.create_box(conversation, workspace, &name).await,
        }
    }

    /// Create and start the box of `conversation` on `workspace`, named `name`.
    async fn create_box(
        &self,
        conversation: &ConversationKey,
        workspace: &str,
        name: &str,
    ) -> Result<Started, SandboxError> {
        let _permit = self.start_permit().await?;
        self.ensure_volume(workspace, spec::labels(&self.inner.instance, conversation))
            .await?;
        let env = self.agent_env(conversation);
        let owner = Owner::Conversation {
            key: conversation,
            workspace,
        };
        let id = self.create_container(name, owner, &env).await?;
        self.start(&id).await?;
        self.metrics.box_started(BoxStart::Cold);
        Ok(Started {
            container: ContainerId(id),
            fresh: true,
        })
    }

    /// Create (not start) a hardened container named `name`; returns its id.
    pub(super) async fn create_container(
        &self,
        name: &str,
        owner: Owner<'_>,
        env: &AgentEnv,
    ) -> Result<String, SandboxError> {
        let body = spec::container_body(&BoxSpec {
            instance: &self.inner.instance,
            owner,
            image: &self.inner.image,
            limits: &self.inner.limits,
            mounts: &self.inner.mounts,
            env,
            seccomp: self.inner.seccomp.as_ref(),
        });
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            platform: String::new(),
        };
        match self
            .inner
            .docker
            .create_container(Some(options), body)
            .await
        {
            Ok(created) => Ok(created.id),
            Err(e) => {
                let err = SandboxError::from_engine("create", name, e);
                if err.is_status(404) {
                    return Err(SandboxError::ImageMissing {
                        image: self.inner.image.clone(),
                    });
                }
                Err(err)
            }
        }
    }

    /// Whether a stopped box was made with other security options than a new box gets
    /// now (before the seccomp profile, or with another one).
    async fn outdated(&self, id: &str) -> Result<bool, SandboxError> {
        let info = self
            .inner
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| SandboxError::from_engine("inspect", id, e))?;
        let has: Vec<String> = info
            .host_config
            .and_then(|h| h.security_opt)
            .unwrap_or_default();
        let seccomp = |opts: &[String]| opts.iter().find(|o| o.starts_with("seccomp=")).cloned();
        let wanted = self.inner.seccomp.as_ref().map(Seccomp::security_opt);
        Ok(seccomp(&has) != wanted)
    }

    /// A permit to create or start a box, after the starts queued before it
    /// ([`STARTS_AT_ONCE`] run at once).
    pub(super) async fn start_permit(&self) -> Result<SemaphorePermit<'_>, SandboxError> {
        /// Counts a start as queued while its wait lasts, however the wait ends.
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Ok(permit) = self.inner.starts.try_acquire() {
            return Ok(permit);
        }
        self.inner.starts_waiting.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.inner.starts_waiting);
        self.inner
            .starts
            .acquire()
            .await
            .map_err(|_| SandboxError::Protocol("box starts are closed".into()))
    }

    /// Box starts waiting for the engine now (beyond the [`STARTS_AT_ONCE`] under way).
    pub fn starts_waiting(&self) -> usize {
        self.inner.starts_waiting.load(Ordering::Relaxed)
    }

    pub(super) async fn ensure_volume(
        &self,
        name: &str,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<(), SandboxError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        self.inner
            .docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| SandboxError::from_engine("create volume", name, e))
    }

    /// The container named `name`, if there is one: its id, whether it runs, and whether
    /// it was started for the warm pool.
    async fn find(&self, name: &str) -> Result<Option<Found>, SandboxError> {
        let info = match self
            .inner
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) => {
                let err = SandboxError::from_engine("inspect", name, e);
                return if err.is_status(404) {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let id = info.id.ok_or_else(|| SandboxError::BoxGone {
            container: name.into(),
            reason: "no id".into(),
        })?;
        let state = info.state.unwrap_or_default();
        let running = state.running.unwrap_or(false)
            || matches!(state.status, Some(ContainerStateStatusEnum::RUNNING));
        let pool = info
            .config
            .and_then(|c| c.labels)
            .is_some_and(|labels| labels.contains_key(spec::LABEL_POOL));
        Ok(Some(Found { id, running, pool }))
    }
}

/// A container found by name.
struct Found {
    id: String,
    running: bool,
    pool: bool,
}
