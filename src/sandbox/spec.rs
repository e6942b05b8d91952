//! The hardened container specification of a box, with no I/O.
//!
//! Everything that makes a box a box is decided here, from the operator's configuration
//! alone; nothing a conversation says can change it.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use clawpen_adapters::ConversationKey;

use super::mounts::AllowedMount;
use super::seccomp::Seccomp;
use crate::config::BoxLimits;

/// Label carrying the conversation key of a box.
pub const LABEL_CONVERSATION: &str = "clawpen.conversation";
/// Label carrying the clawpen instance that owns a box.
pub const LABEL_INSTANCE: &str = "clawpen.instance";
/// Label of a box, and its volume, started ahead of need for the warm pool. Such a box has
/// no [`LABEL_CONVERSATION`] (labels are fixed at creation, and no conversation is known
/// then); once claimed, the store's mapping of the conversation to the volume says whose it
/// is (see `sandbox::pool`).
pub const LABEL_POOL: &str = "clawpen.pool";

/// Where the conversation's volume is mounted in the box.
pub const WORKSPACE: &str = "/workspace";
/// The unprivileged user every box runs as (the image's `agent` user).
pub const BOX_USER: &str = "1000:1000";

/// Non-secret settings passed into the box's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEnv {
    /// The provider name (`echo`, ...).
    pub provider: String,
    /// The echo provider's delay between chunks.
    pub echo_delay_ms: u64,
    /// The model the agent asks for.
    pub model: Option<String>,
    /// An external harness command run instead of the built-in loop.
    pub harness: Option<String>,
    /// The operator's instructions file, mounted read-only at
    /// [`clawpen_protocol::INSTRUCTIONS_PATH`].
    pub instructions: Option<std::path::PathBuf>,
}

/// Whose box it is, which decides its labels and its workspace volume.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'a> {
    /// A conversation's box, on its workspace: [`volume_name`] of the conversation, or the
    /// volume it claimed from the warm pool.
    Conversation {
        /// The conversation.
        key: &'a ConversationKey,
        /// Its workspace volume.
        workspace: &'a str,
    },
    /// A warm pool box no conversation has claimed yet, on its own fresh volume.
    Pool {
        /// Its workspace volume.
        workspace: &'a str,
    },
}

impl Owner<'_> {
    /// The workspace volume mounted at [`WORKSPACE`].
    pub fn workspace(&self) -> &str {
        match self {
            Self::Conversation { workspace, .. } | Self::Pool { workspace } => workspace,
        }
    }
}

/// What a box is made of.
#[derive(Clone, Debug)]
pub struct BoxSpec<'a> {
    /// The instance id (label and name prefix).
    pub instance: &'a str,
    /// Whose box it is.
    pub owner: Owner<'a>,
    /// The image to run.
    pub image: &'a str,
    /// Resource limits.
    pub limits: &'a BoxLimits,
    /// Host paths that passed the allowlist.
    pub mounts: &'a [AllowedMount],
    /// The agent's non-secret environment.
    pub env: &'a AgentEnv,
    /// The seccomp profile to apply; `None` leaves the engine's default in force.
    pub seccomp: Option<&'a Seccomp>,
}

/// A short stable hash (FNV-1a, 64 bit), so names and labels do not depend on the std
/// hasher.
pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A readable, Docker-safe, collision-resistant name stem for a conversation's box.
fn stem(instance: &str, conversation: &ConversationKey) -> String {
    let key = conversation.to_string();
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!(
        "clawpen-{instance}-{readable}-{:016x}",
        fnv64(key.as_bytes())
    )
}

/// The container name of a conversation's box.
pub fn container_name(instance: &str, conversation: &ConversationKey) -> String {
    stem(instance, conversation)
}

/// The volume (workspace) name of a conversation's box.
pub fn volume_name(instance: &str, conversation: &ConversationKey) -> String {
    format!("{}-ws", stem(instance, conversation))
}

/// The labels of a box and its volume.
pub fn labels(instance: &str, conversation: &ConversationKey) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_CONVERSATION.to_string(), conversation.to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
    ])
}

/// The labels of a warm pool box and its volume: the instance, and no conversation.
pub fn pool_labels(instance: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POOL.to_string(), "warm".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
    ])
}

/// The container and volume names of a warm pool box, from a random id: the pool box is
/// renamed to its conversation's [`container_name`] when claimed, but its volume (which
/// the engine cannot rename) keeps this name for good.
pub fn pool_names(instance: &str, id: u64) -> (String, String) {
    let container = format!("clawpen-{instance}-pool-{id:016x}");
    let volume = format!("{container}-ws");
    (container, volume)
}

fn owner_labels(instance: &str, owner: &Owner<'_>) -> HashMap<String, String> {
    match owner {
        Owner::Conversation { key, .. } => labels(instance, key),
        Owner::Pool { .. } => pool_labels(instance),
    }
}

/// The box's environment: settings only, never a secret.
fn agent_env(env: &AgentEnv) -> Vec<String> {
    let mut vars = vec![
        format!("{}={}", clawpen_protocol::ENV_PROVIDER, env.provider),
        format!(
            "{}={}",
            clawpen_protocol::ENV_ECHO_DELAY_MS,
            env.echo_delay_ms
        ),
        format!("HOME={WORKSPACE}"),
        "PATH=/bin:/usr/bin:/usr/local/bin".into(),
    ];
    if let Some(model) = &env.model {
        vars.push(format!("{}={model}", clawpen_protocol::ENV_MODEL));
    }
    if let Some(harness) = &env.harness {
        vars.push(format!("{}={harness}", clawpen_protocol::ENV_HARNESS));
    }
    vars
}

/// The container create request of a box: hardened by default.
pub fn container_body(spec: &BoxSpec<'_>) -> ContainerCreateBody {
    let limits = spec.limits;
    let memory = i64::try_from(limits.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
    let mut mounts = vec![Mount {
        target: Some(WORKSPACE.into()),
        source: Some(spec.owner.workspace().to_string()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        ..Default::default()
    }];
    mounts.extend(spec.env.instructions.iter().map(|path| Mount {
        target: Some(clawpen_protocol::INSTRUCTIONS_PATH.into()),
        source: Some(path.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }));
    mounts.extend(spec.mounts.iter().map(|m| Mount {
        target: Some(m.target.clone()),
        source: Some(m.host.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(!m.writable),
        ..Default::default()
    }));
    let host_config = HostConfig {
        // No network interface but loopback.
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={}m,mode=1777", limits.tmp_mb),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(
            std::iter::once("no-new-privileges:true".to_string())
                .chain(spec.seccomp.map(Seccomp::security_opt))
                .collect(),
        ),
        privileged: Some(false),
        pids_limit: Some(limits.pids),
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some((limits.cpus * 1e9) as i64),
        mounts: Some(mounts),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), format!("{}k", limits.log_kb.max(1))),
                ("max-file".to_string(), "1".to_string()),
            ])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.into()),
        user: Some(BOX_USER.into()),
        working_dir: Some(WORKSPACE.into()),
        env: Some(agent_env(spec.env)),
        labels: Some(owner_labels(spec.instance, &spec.owner)),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // The bridge re-attaches after a restart; stdin must stay open across detaches.
        stdin_once: Some(false),
        tty: Some(false),
        network_disabled: Some(true),
        stop_timeout: Some(2),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_docker_safe_and_distinct() {
        let a = ConversationKey::new("telegram", "-1001").with_thread("7");
        let b = ConversationKey::new("telegram", "-1001");
        assert_eq!(container_name("abc", &a), container_name("abc", &a));
        assert_ne!(container_name("abc", &a), container_name("abc", &b));
        let name = container_name("abc", &a);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
            "{name}"
        );
        assert!(volume_name("abc", &a).ends_with("-ws"));
    }

    #[test]
    fn a_box_is_hardened_by_default() {
        let seccomp = Seccomp::clawpen().unwrap_or_else(|e| panic!("{e}"));
        let key = ConversationKey::new("terminal", "me");
        let env = AgentEnv {
            provider: "echo".into(),
            echo_delay_ms: 5,
            model: None,
            harness: None,
            instructions: None,
        };
        let workspace = volume_name("i1", &key);
        let body = container_body(&BoxSpec {
            instance: "i1",
            owner: Owner::Conversation {
                key: &key,
                workspace: &workspace,
            },
            image: "clawpen-box:test",
            limits: &BoxLimits::default(),
            mounts: &[],
            env: &env,
            seccomp: Some(&seccomp),
        });
        let host = body.host_config.clone().unwrap_or_default();
        let security = host.security_opt.clone().unwrap_or_default();
        assert_eq!(security[0], "no-new-privileges:true");
        assert_eq!(security[1], seccomp.security_opt());
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.memory, host.memory_swap);
        assert!(host.binds.is_none());
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(mounts.len(), 1, "only the workspace volume");
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(body.user.as_deref(), Some(BOX_USER));
        let labels = body.labels.unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_CONVERSATION).map(String::as_str),
            Some("terminal:me")
        );
        let env = body.env.unwrap_or_default().join("\n");
        assert!(!env.contains("KEY") && !env.contains("TOKEN"), "{env}");
    }
}
