//! The sandbox runtime: one hardened container ("box") and one volume per conversation,
//! through the Docker API of the engine named by `DOCKER_HOST`.
//!
//! Every box and volume carries the labels [`spec::LABEL_CONVERSATION`] and
//! [`spec::LABEL_INSTANCE`], which is how a restarted bridge finds its boxes again. Warm
//! pool boxes (see [`pool`]) carry [`spec::LABEL_POOL`] instead of a conversation; the store
//! says which conversation claimed one.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};

use bollard::errors::Error as DockerError;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use clawpen_domain::{ContainerId, ConversationKey};
use tokio::sync::Semaphore;

pub(crate) mod attach;
pub mod capacity;
mod create;
mod exec;
mod files;
pub(crate) mod image;
mod inventory;
pub(crate) mod mounts;
pub(crate) mod pool;
pub mod quota;
pub(crate) mod seccomp;
pub mod spec;

pub use attach::{BoxConn, BoxInput, BoxOutput, Outputs, OUTPUT_BYTES};
pub use create::STARTS_AT_ONCE;
pub use inventory::{BoxInfo, VolumeInfo};
use mounts::{AllowedMount, MountError};
pub use pool::{attribute, WarmBox};
use seccomp::{Seccomp, SeccompError};
use spec::AgentEnv;

use crate::config::{BoxLimits, Config, SeccompChoice};
use crate::metrics::Metrics;

/// A failure of the sandbox, in our words; engine errors are converted where they enter.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No Docker engine answers at the configured address.
    #[error(
        "no Docker engine answers at {host}: {reason} (is dockerd running? is DOCKER_HOST right?)"
    )]
    Unreachable {
        /// The address tried.
        host: String,
        /// The client's error.
        reason: String,
    },
    /// The engine stopped answering (restarting, crashed, its socket gone): nothing was
    /// done, and the same request may succeed once it is back.
    #[error("the sandbox engine is not answering ({reason})")]
    EngineDown {
        /// The client's error.
        reason: String,
    },
    /// The box image is not present and could not be built.
    #[error("box image {image} is missing; run `clawpen image build`")]
    ImageMissing {
        /// The image tag.
        image: String,
    },
    /// Building the box image failed.
    #[error("building the box image failed: {0}")]
    Build(String),
    /// The box is gone or stopped answering.
    #[error("box {container} is gone: {reason}")]
    BoxGone {
        /// The container.
        container: String,
        /// What happened.
        reason: String,
    },
    /// A mount was refused.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The built-in seccomp profile is unusable.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A protocol message could not be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The engine refused an operation.
    #[error("docker {op} {target}: {message}")]
    Engine {
        /// The operation.
        op: &'static str,
        /// Its target (container, volume, image).
        target: String,
        /// The engine's message.
        message: String,
        /// The HTTP status, when the engine answered.
        status: Option<u16>,
    },
}

impl SandboxError {
    /// Convert a bollard error at the point it enters.
    pub fn from_engine(op: &'static str, target: &str, error: DockerError) -> Self {
        match error {
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => Self::Engine {
                op,
                target: target.to_string(),
                message,
                status: Some(status_code),
            },
            DockerError::IOError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::HttpClientError { .. }
            | DockerError::SocketNotFoundError(_) => Self::EngineDown {
                reason: format!("docker {op} {target}: {error}"),
            },
            other => Self::Engine {
                op,
                target: target.to_string(),
                message: other.to_string(),
                status: None,
            },
        }
    }

    /// Whether the engine itself is out of reach (rather than refusing this request), so
    /// that waiting for it is the remedy.
    pub fn engine_down(&self) -> bool {
        matches!(self, Self::EngineDown { .. } | Self::Unreachable { .. })
    }

    fn is_status(&self, code: u16) -> bool {
        matches!(self, Self::Engine { status: Some(s), .. } if *s == code)
    }
}

/// How a box ended, for the message the user gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxExit {
    /// Whether it still runs.
    pub running: bool,
    /// Its exit code, when stopped.
    pub exit_code: Option<i64>,
    /// Whether the kernel killed it for memory.
    pub oom_killed: bool,
    /// Whether the engine is removing it (`docker rm -f`), or left it dead after a removal
    /// failed part-way. Such a box also shows the exit code of the kill that came first.
    pub removing: bool,
    /// Why the bridge itself stopped the box (over its workspace quota), in words for its
    /// chat: "the box was stopped: <this>".
    pub stopped_for: Option<String>,
}

/// The result of making sure a conversation's box runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// The container id.
    pub container: ContainerId,
    /// True when its agent process was started just now (sequence numbers begin at 1).
    pub fresh: bool,
}

/// Handle to the sandbox; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
    /// Where box starts are counted ([`Metrics::off`] unless the daemon serves metrics).
    metrics: Metrics,
}

struct Inner {
    docker: Docker,
    host: String,
    instance: String,
    image: String,
    limits: BoxLimits,
    mounts: Vec<AllowedMount>,
    env: AgentEnv,
    /// Per-conversation model and harness overrides.
    conversations: std::collections::BTreeMap<String, crate::config::ConversationSettings>,
    /// The seccomp profile of every box; `None` leaves the engine's default in force.
    seccomp: Option<Seccomp>,
    /// Why the bridge stopped a box, by container id, until it starts again: read when
    /// the box's conversation asks how it ended. A std mutex, held only to read or write.
    stopped_for: Mutex<HashMap<String, String>>,
    /// One permit per box the engine may be creating or starting at once
    /// ([`STARTS_AT_ONCE`]); tokio's semaphore is fair, so starts are served in order.
    starts: Semaphore,
    /// Box starts waiting for a permit of `starts`: the queue's length.
    starts_waiting: AtomicUsize,
    /// What the workspace quota's watchdog did so far.
    quota: quota::Counts,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("host", &self.inner.host)
            .field("instance", &self.inner.instance)
            .field("image", &self.inner.image)
            .finish_non_exhaustive()
    }
}

/// Connect to the engine named by `DOCKER_HOST` (default: the local socket), negotiating
/// the API version so that older engines work too.
pub async fn connect_engine() -> Result<(Docker, String), SandboxError> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |e: DockerError| SandboxError::Unreachable {
        host: host.clone(),
        reason: e.to_string(),
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok((docker, host))
}

impl Sandbox {
    /// Connect to the engine and check the configured mounts against the allowlist.
    pub async fn connect(config: &Config, instance: &str) -> Result<Self, SandboxError> {
        let mounts = mounts::check_mounts(&config.mounts, &config.mount_allowlist)?;
        let instructions = match &config.instructions_file {
            Some(path) => Some(mounts::check_instructions(path)?),
            None => None,
        };
        let seccomp = match config.limits.seccomp {
            SeccompChoice::Clawpen => Some(Seccomp::clawpen()?),
            SeccompChoice::Engine => None,
        };
        let (docker, host) = connect_engine().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                host,
                instance: instance.to_string(),
                image: config.image.clone(),
                limits: config.limits.clone(),
                mounts,
                env: AgentEnv {
                    provider: config.provider.clone(),
                    echo_delay_ms: config.echo_delay_ms,
                    model: config.box_model(),
                    harness: config.harness.clone(),
                    instructions,
                },
                conversations: config.conversations.clone(),
                seccomp,
                stopped_for: Mutex::new(HashMap::new()),
                starts: Semaphore::new(STARTS_AT_ONCE),
                starts_waiting: AtomicUsize::new(0),
                quota: quota::Counts::default(),
            }),
            metrics: Metrics::off(),
        })
    }

    /// The same sandbox, counting box starts in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The engine's address (`DOCKER_HOST`, or the local socket).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The environment of one conversation's box: the defaults and its overrides.
    fn agent_env(&self, conversation: &ConversationKey) -> AgentEnv {
        let mut env = self.inner.env.clone();
        if let Some(own) = self.inner.conversations.get(&conversation.to_string()) {
            env.model = own.model.clone().or(env.model);
            env.harness = own.harness.clone().or(env.harness);
        }
        env
    }

    /// The seccomp profile boxes run under; `None` when the engine's default is in force.
    pub fn seccomp(&self) -> Option<&Seccomp> {
        self.inner.seccomp.as_ref()
    }

    /// The workspace quota and how often it is checked.
    pub fn limits(&self) -> &BoxLimits {
        &self.inner.limits
    }

    fn stopped_for(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned map only means a panic mid-insert; its entries are still usable.
        self.inner
            .stopped_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Kill a box for a reason of the bridge's own (`reason` completes "the box was
    /// stopped: …"), which its conversation is told when it finds the box gone.
    pub async fn stop_for(
        &self,
        container: &ContainerId,
        reason: String,
    ) -> Result<(), SandboxError> {
        self.stopped_for()
            .insert(container.as_str().to_string(), reason);
        self.kill(container).await
    }

    /// How many boxes the engine's machine can hold (see [`capacity`]): from its memory,
    /// and this host's pid limit when the engine runs here (a local socket).
    pub async fn capacity(&self) -> capacity::Capacity {
        let memory = match self.inner.docker.info().await {
            Ok(info) => info.mem_total.and_then(|m| u64::try_from(m).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "the engine did not describe itself");
                None
            }
        };
        let local = self.inner.host.starts_with("unix://") || self.inner.host.starts_with('/');
        let pid_max = if local {
            capacity::local_pid_max()
        } else {
            None
        };
        capacity::estimate(memory, pid_max)
    }

    /// The engine client, for diagnostics and tests.
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// This clawpen instance's id (a label on every box).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The box image tag.
    pub fn image(&self) -> &str {
        &self.inner.image
    }

    /// Whether the box image is present in the engine.
    pub async fn image_present(&self) -> bool {
        self.inner
            .docker
            .inspect_image(&self.inner.image)
            .await
            .is_ok()
    }

    async fn start(&self, id: &str) -> Result<(), SandboxError> {
        self.inner
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| SandboxError::from_engine("start", id, e))
    }

    /// The state of a container, or None when it does not exist.
    pub async fn inspect(&self, container: &ContainerId) -> Result<Option<BoxExit>, SandboxError> {
        match self
            .inner
            .docker
            .inspect_container(container.as_str(), None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let running = state.running.unwrap_or(false)
                    || matches!(state.status, Some(ContainerStateStatusEnum::RUNNING));
                // Also while the engine still shows the box running: the kill is under way
                // (the reason goes when the box starts again).
                let stopped_for = info.id.and_then(|id| self.stopped_for().get(&id).cloned());
                Ok(Some(BoxExit {
                    stopped_for,
                    running,
                    exit_code: if running { None } else { state.exit_code },
                    oom_killed: state.oom_killed.unwrap_or(false),
                    removing: !running
                        && matches!(
                            state.status,
                            Some(
                                ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::DEAD
                            )
                        ),
                }))
            }
            Err(e) => {
                let err = SandboxError::from_engine("inspect", container.as_str(), e);
                if err.is_status(404) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Attach to a running box.
    pub async fn attach(&self, container: &ContainerId) -> Result<BoxConn, SandboxError> {
        BoxConn::attach(&self.inner.docker, container).await
    }

    /// Stop a box (idle); its workspace stays.
    pub async fn stop(&self, container: &ContainerId) -> Result<(), SandboxError> {
        let options = StopContainerOptions {
            t: Some(2),
            signal: None,
        };
        match self
            .inner
            .docker
            .stop_container(container.as_str(), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = SandboxError::from_engine("stop", container.as_str(), e);
                // 304: already stopped; 404: already gone. Either way it is stopped.
                if err.is_status(304) || err.is_status(404) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Kill a box that hangs; its workspace stays.
    pub async fn kill(&self, container: &ContainerId) -> Result<(), SandboxError> {
        let options = KillContainerOptions {
            signal: "KILL".into(),
        };
        match self
            .inner
            .docker
            .kill_container(container.as_str(), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = SandboxError::from_engine("kill", container.as_str(), e);
                if err.is_status(409) || err.is_status(404) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Remove a conversation's box and its workspace volume `workspace` (the one named
    /// after it, or the one it claimed from the warm pool).
    pub async fn remove_box(
        &self,
        conversation: &ConversationKey,
        workspace: &str,
    ) -> Result<(), SandboxError> {
        let name = spec::container_name(&self.inner.instance, conversation);
        self.remove_container(&ContainerId::from(name.as_str()))
            .await?;
        self.remove_volume(workspace).await
    }

    /// Remove a workspace volume (gone already counts as removed). Its files are lost:
    /// only an explicit operator command (`clawpen gc --yes`) or a test calls this.
    pub async fn remove_volume(&self, volume: &str) -> Result<(), SandboxError> {
        match self
            .inner
            .docker
            .remove_volume(volume, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = SandboxError::from_engine("remove volume", volume, e);
                if err.is_status(404) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Remove a container, running or not, by id or name (gone already counts as removed);
    /// its volume stays.
    pub async fn remove_container(&self, container: &ContainerId) -> Result<(), SandboxError> {
        let options = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match self
            .inner
            .docker
            .remove_container(container.as_str(), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = SandboxError::from_engine("remove", container.as_str(), e);
                if err.is_status(404) {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}
