//! A command run in a running box through the Docker exec API: a scheduled job's `check`,
//! run before the model is woken. It runs as the box user in the workspace, inside the
//! box's own limits (no network, read-only root, no capabilities), like the agent's shell.

use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use clawpen_domain::ContainerId;
use futures_util::StreamExt;

use super::{spec, Sandbox, SandboxError};

/// The most output of a command kept (the rest is cut).
pub const MAX_OUTPUT: usize = 16 * 1024;

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// Its exit code; `None` when it did not finish in time.
    pub code: Option<i64>,
    /// Its stdout and stderr together, cut at [`MAX_OUTPUT`].
    pub output: String,
}

impl Sandbox {
    /// Runs `sh -c COMMAND` in a running box, waiting up to `limit` for it to finish.
    pub async fn run_in_box(
        &self,
        container: &ContainerId,
        command: &str,
        limit: Duration,
    ) -> Result<Ran, SandboxError> {
        let docker = self.docker();
        let target = container.as_str();
        let config = ExecConfig {
            cmd: Some(vec!["sh".into(), "-c".into(), command.into()]),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            user: Some(spec::BOX_USER.into()),
            working_dir: Some(spec::WORKSPACE.into()),
            ..Default::default()
        };
        let exec = docker
            .create_exec(target, config)
            .await
            .map_err(|e| SandboxError::from_engine("exec", target, e))?;
        let started = docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await
            .map_err(|e| SandboxError::from_engine("exec", target, e))?;
        let mut output = String::new();
        let read = async {
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = started
            {
                while let Some(Ok(chunk)) = stream.next().await {
                    if output.len() < MAX_OUTPUT {
                        output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    }
                }
            }
        };
        if tokio::time::timeout(limit, read).await.is_err() {
            // Left running inside the box, within its pids and CPU limits; the box's next
            // idle stop ends it.
            return Ok(Ran { code: None, output });
        }
        if output.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
            output.push_str("\n[output cut here]");
        }
        let code = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| SandboxError::from_engine("exec", target, e))?
            .exit_code;
        Ok(Ran { code, output })
    }
}
