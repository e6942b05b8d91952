//! Files in a box's workspace, moved through the Docker archive API: attachments in,
//! files the agent sends out. Paths must stay inside the workspace.

use std::path::{Component, Path};

use clawpen_domain::ContainerId;

use super::{spec, Sandbox, SandboxError};

/// The largest workspace file uploaded to a chat.
pub const MAX_UPLOAD: usize = 50 << 20;

fn inside_workspace(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

impl Sandbox {
    /// Write one file into a box's workspace, owned by the box user, creating its
    /// directory. `path` is relative to the workspace and must stay inside it.
    pub async fn write_workspace_file(
        &self,
        container: &ContainerId,
        path: &str,
        data: &[u8],
    ) -> Result<(), SandboxError> {
        let relative = Path::new(path);
        if !inside_workspace(relative) {
            return Err(SandboxError::Protocol(format!(
                "{path}: not a path inside the workspace"
            )));
        }
        let mut tar = tar::Builder::new(Vec::new());
        let (uid, gid) = (1000, 1000);
        let mut dirs = Vec::new();
        let mut parent = relative.parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_path_buf());
            parent = dir.parent();
        }
        let io = |e: std::io::Error| SandboxError::Protocol(e.to_string());
        for dir in dirs.into_iter().rev() {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(uid);
            header.set_gid(gid);
            header.set_size(0);
            header.set_cksum();
            tar.append_data(&mut header, &dir, std::io::empty())
                .map_err(io)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append_data(&mut header, relative, data).map_err(io)?;
        let archive = tar.into_inner().map_err(io)?;
        let options = bollard::query_parameters::UploadToContainerOptions {
            path: spec::WORKSPACE.to_string(),
            ..Default::default()
        };
        self.inner
            .docker
            .upload_to_container(
                container.as_str(),
                Some(options),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(|e| SandboxError::from_engine("write", path, e))
    }

    /// Read one file from a box's workspace (for uploads), refusing paths that leave it
    /// and files over [`MAX_UPLOAD`].
    pub async fn read_workspace_file(
        &self,
        container: &ContainerId,
        path: &str,
    ) -> Result<Vec<u8>, SandboxError> {
        let relative = Path::new(
            path.trim_start_matches("/workspace/")
                .trim_start_matches('/'),
        );
        if !inside_workspace(relative) {
            return Err(SandboxError::Protocol(format!(
                "{path}: not a path inside the workspace"
            )));
        }
        let full = format!("{}/{}", spec::WORKSPACE, relative.display());
        let options =
            bollard::query_parameters::DownloadFromContainerOptions { path: full.clone() };
        let mut stream = self
            .inner
            .docker
            .download_from_container(container.as_str(), Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|e| SandboxError::from_engine("read", &full, e))?;
            archive.extend_from_slice(&chunk);
            if archive.len() > MAX_UPLOAD + 64 * 1024 {
                return Err(SandboxError::Protocol(format!(
                    "{path}: larger than {} MB",
                    MAX_UPLOAD >> 20
                )));
            }
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        let entries = tar
            .entries()
            .map_err(|e| SandboxError::Protocol(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| SandboxError::Protocol(e.to_string()))?;
            if entry.header().entry_type().is_file() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data)
                    .map_err(|e| SandboxError::Protocol(e.to_string()))?;
                return Ok(data);
            }
        }
        Err(SandboxError::Protocol(format!(
            "{path}: not a regular file"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_paths_below_the_workspace_pass() {
        assert!(inside_workspace(Path::new("inbox/a.txt")));
        for bad in ["/etc/passwd", "../x", "inbox/../../x", ""] {
            assert!(!inside_workspace(Path::new(bad)) || bad.is_empty(), "{bad}");
        }
    }
}
