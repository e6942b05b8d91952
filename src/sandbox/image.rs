//! Building the box image offline: the engine has no images and can pull none, so the
//! image is `FROM scratch` plus a statically linked clawpen-agent and a static busybox,
//! sent to the engine's (legacy, registry-free) builder as a tar context.

use std::path::{Path, PathBuf};

use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;

use super::{Sandbox, SandboxError};
use crate::config::Config;

/// The box Dockerfile, shipped inside the binary so `clawpen image build` works anywhere.
const DOCKERFILE: &str = include_str!("../../docker/box/Dockerfile");

/// Busybox applets linked in the image's /bin when the busybox binary cannot list its own
/// (`busybox --list`): a shell and the usual tools.
const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "mkdir",
    "rm",
    "rmdir",
    "cp",
    "mv",
    "ln",
    "touch",
    "ps",
    "id",
    "ip",
    "ifconfig",
    "grep",
    "sed",
    "awk",
    "find",
    "head",
    "tail",
    "wc",
    "sort",
    "uniq",
    "env",
    "sleep",
    "true",
    "false",
    "test",
    "[",
    "printf",
    "chmod",
    "stat",
    "df",
    "du",
    "date",
    "tr",
    "cut",
    "xargs",
    "vi",
    "tar",
    "gzip",
    "gunzip",
    "which",
    "whoami",
    "hostname",
    "uname",
    "wget",
    "nc",
    "mount",
    "cmp",
    "diff",
    "tee",
    "basename",
    "dirname",
    "readlink",
    "realpath",
    "seq",
    "yes",
    "kill",
    "nproc",
    "free",
    "top",
    "less",
    "more",
    "od",
    "hexdump",
    "md5sum",
    "sha256sum",
];

/// Image label holding a fingerprint of the agent binary inside.
const LABEL_AGENT: &str = "clawpen.agent";

/// A fingerprint of an agent binary, to tell whether the image holds this one.
fn agent_fingerprint(agent: &[u8]) -> String {
    format!("{:016x}-{}", super::spec::fnv64(agent), agent.len())
}

/// The target directories of a workspace checkout this `clawpen` may have been built in:
/// `target/{debug,release}/clawpen` → `target/`, and one level more for a cross build.
fn checkout_targets() -> Vec<PathBuf> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    [dir.parent(), dir.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
        .map(Path::to_path_buf)
        .collect()
}

/// Where `cargo xtask agent` puts the static agent inside a target directory.
fn static_agent_in(target: &Path) -> PathBuf {
    target
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release/clawpen-agent")
}

/// Where the static agent binary is looked for, in order.
fn agent_candidates(config: &Config) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = config.agent_binary.iter().cloned().collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("clawpen-agent"));
    }
    out.extend(checkout_targets().iter().map(|t| static_agent_in(t)));
    out.push(PathBuf::from("/usr/local/lib/clawpen/clawpen-agent"));
    out
}

/// Where a static busybox is looked for, in order: the configured one, the system's, and
/// the one `cargo xtask busybox` unpacks into a checkout's target directory when it may
/// not install the package.
fn busybox_candidates(config: &Config) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = config.busybox.iter().cloned().collect();
    out.extend([
        PathBuf::from("/bin/busybox"),
        PathBuf::from("/usr/bin/busybox"),
    ]);
    for target in checkout_targets() {
        let unpacked = target.join("busybox-static");
        out.extend([
            unpacked.join("bin/busybox"),
            unpacked.join("usr/bin/busybox"),
        ]);
    }
    out
}

/// Whether this `clawpen` runs from a workspace checkout (so `cargo xtask` is at hand).
pub fn in_checkout() -> bool {
    let is_root = |dir: &Path| dir.join("xtask/Cargo.toml").is_file();
    checkout_targets()
        .iter()
        .any(|target| target.parent().is_some_and(is_root))
        || std::env::current_dir().is_ok_and(|dir| is_root(&dir))
}

/// The static agent the image would be built from, or why there is none.
pub fn find_agent(config: &Config) -> Result<PathBuf, SandboxError> {
    find_static(&agent_candidates(config), "clawpen-agent", AGENT_HINT).map(|(path, _)| path)
}

/// The static busybox the image would be built from, or why there is none.
pub fn find_busybox(config: &Config) -> Result<PathBuf, SandboxError> {
    find_static(&busybox_candidates(config), "busybox", BUSYBOX_HINT).map(|(path, _)| path)
}

/// How to get the static agent.
const AGENT_HINT: &str = "Build it with `cargo xtask agent` in a clawpen checkout (or set \
                          CLAWPEN_AGENT_BINARY)";

/// How to get a static busybox.
const BUSYBOX_HINT: &str = "Get one with `cargo xtask busybox` in a clawpen checkout, or \
                            `apt-get install busybox-static` (or set CLAWPEN_BUSYBOX)";

/// Whether an ELF file has no program interpreter, i.e. runs in an empty image.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| bytes.get(at..at + len);
    if read(0, 4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) {
        return false;
    }
    let u64_at = |at| read(at, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let u16_at = |at| read(at, 2).map(|b| u16::from_le_bytes(b.try_into().unwrap_or([0; 2])));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        read(at, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))) != Some(PT_INTERP)
    })
}

fn find_static(
    candidates: &[PathBuf],
    what: &str,
    hint: &str,
) -> Result<(PathBuf, Vec<u8>), SandboxError> {
    let mut seen = Vec::new();
    for path in candidates {
        match std::fs::read(path) {
            Ok(bytes) if is_static_elf(&bytes) => return Ok((path.clone(), bytes)),
            Ok(_) => seen.push(format!("{} (not statically linked)", path.display())),
            Err(_) => seen.push(format!("{} (missing)", path.display())),
        }
    }
    Err(SandboxError::Build(format!(
        "no static {what} found; looked at: {}. {hint}",
        seen.join(", ")
    )))
}

/// The build context: Dockerfile, clawpen-agent, busybox and a small root tree.
pub fn build_context(
    agent: &[u8],
    busybox: &[u8],
    applets: &[String],
) -> Result<Vec<u8>, std::io::Error> {
    let mut tar = tar::Builder::new(Vec::new());
    let add_file = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
    };
    add_file(&mut tar, "Dockerfile", 0o644, DOCKERFILE.as_bytes())?;
    add_file(&mut tar, "clawpen-agent", 0o755, agent)?;
    add_file(&mut tar, "busybox", 0o755, busybox)?;
    add_file(&mut tar, "rootfs/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/workspace:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")?;
    add_file(
        &mut tar,
        "rootfs/etc/group",
        0o644,
        b"root:x:0:\nagent:x:1000:\nnogroup:x:65534:\n",
    )?;
    // The workspace sits outside rootfs/: the Dockerfile copies it with --chown.
    for (dir, mode) in [
        ("rootfs/tmp", 0o1777),
        ("workspace", 0o755),
        ("rootfs/bin", 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    // Never a link named busybox: it would point at itself.
    for applet in applets
        .iter()
        .filter(|a| !a.contains('/') && !a.is_empty() && *a != "busybox")
    {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(0);
        tar.append_link(&mut header, format!("rootfs/bin/{applet}"), "busybox")?;
    }
    tar.into_inner()
}

/// Every applet the busybox binary offers, or the built-in list when it cannot say.
fn applets(busybox: &Path) -> Vec<String> {
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if listed.iter().any(|a| a == "sh") {
        listed
    } else {
        APPLETS.iter().map(|a| a.to_string()).collect()
    }
}

impl Sandbox {
    /// Build the box image from the static agent and busybox, without any registry.
    pub async fn build_image(&self, config: &Config) -> Result<(), SandboxError> {
        let (agent_path, agent) =
            find_static(&agent_candidates(config), "clawpen-agent", AGENT_HINT)?;
        let (busybox_path, busybox) =
            find_static(&busybox_candidates(config), "busybox", BUSYBOX_HINT)?;
        tracing::info!(image = %self.image(), agent = %agent_path.display(), busybox = %busybox_path.display(), "building the box image");
        let context = build_context(&agent, &busybox, &applets(&busybox_path))
            .map_err(|e| SandboxError::Build(e.to_string()))?;
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(self.image().to_string()),
            rm: true,
            forcerm: true,
            version: BuilderVersion::BuilderV1,
            labels: Some(
                [
                    (
                        "clawpen.version".to_string(),
                        env!("CARGO_PKG_VERSION").to_string(),
                    ),
                    (LABEL_AGENT.to_string(), agent_fingerprint(&agent)),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let body = bollard::body_full(context.into());
        let mut stream = self.docker().build_image(options, None, Some(body));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| SandboxError::Build(e.to_string()))?;
            if let Some(detail) = info.error_detail {
                return Err(SandboxError::Build(
                    detail.message.unwrap_or_else(|| "unknown error".into()),
                ));
            }
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                tracing::debug!(line, "image build");
            }
        }
        if !self.image_present().await {
            return Err(SandboxError::Build(format!(
                "the engine reported success but {} is missing",
                self.image()
            )));
        }
        Ok(())
    }

    /// Build the box image if it is missing (first start, or a new clawpen version), or
    /// if the static agent at hand differs from the one in the image (a rebuilt agent of
    /// the same version would otherwise never reach the boxes).
    pub async fn ensure_image(&self, config: &Config) -> Result<(), SandboxError> {
        let Ok(image) = self.docker().inspect_image(self.image()).await else {
            return self.build_image(config).await;
        };
        let in_image = image
            .config
            .and_then(|c| c.labels)
            .and_then(|mut l| l.remove(LABEL_AGENT));
        let at_hand = find_static(&agent_candidates(config), "clawpen-agent", "")
            .ok()
            .map(|(_, agent)| agent_fingerprint(&agent));
        match (in_image, at_hand) {
            (Some(old), Some(new)) if old != new => {
                tracing::info!(image = %self.image(), "the static agent changed; rebuilding the box image");
                self.build_image(config).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        // This test binary is dynamically linked; garbage is not an ELF at all.
        let me = std::env::current_exe()
            .and_then(std::fs::read)
            .unwrap_or_default();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }

    #[test]
    fn context_holds_the_files_the_dockerfile_copies() {
        let applets: Vec<String> = APPLETS.iter().map(|a| a.to_string()).collect();
        let context = build_context(b"agent", b"busybox", &applets).unwrap_or_default();
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> = archive
            .entries()
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.path().ok().map(|p| p.to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for expected in [
            "Dockerfile",
            "clawpen-agent",
            "busybox",
            "rootfs/bin/sh",
            "rootfs/tmp/",
            "rootfs/etc/passwd",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
