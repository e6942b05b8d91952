//! Running cargo and the built binaries, where the target directory is, and the static
//! agent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Failure, Step};

/// The target triple of the static agent: this machine's architecture, GNU libc linked
/// statically (`+crt-static`), so the agent runs in an image that holds nothing else.
pub fn agent_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The checkout xtask runs in, and what its steps hand to the programs they start.
pub struct Workspace {
    /// The workspace root (where Cargo.toml and .ci/ are).
    pub root: PathBuf,
    /// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the root.
    pub target: PathBuf,
    /// The cargo that runs us (`CARGO`), so a pinned toolchain builds everything.
    cargo: OsString,
    /// Variables set for every program started (the busybox found, when the operator
    /// named none).
    env: Vec<(&'static str, OsString)>,
}

impl Workspace {
    /// The workspace this xtask was built from.
    pub fn locate() -> Step<Self> {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Failure::new("the xtask crate has no parent directory"))?;
        let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
            // Relative to where cargo was started, as cargo itself reads it.
            Some(dir) => std::env::current_dir()
                .map(|cwd| cwd.join(&dir))
                .unwrap_or_else(|_| PathBuf::from(dir)),
            None => root.join("target"),
        };
        Ok(Self {
            root,
            target,
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            env: Vec::new(),
        })
    }

    /// Tells every program started later where busybox is, unless `CLAWPEN_BUSYBOX` already
    /// says (the operator's choice wins).
    pub fn offer_busybox(&mut self, path: &Path) {
        if std::env::var_os("CLAWPEN_BUSYBOX").is_none_or(|v| v.is_empty()) {
            self.env.push(("CLAWPEN_BUSYBOX", path.into()));
        }
    }

    /// Runs `cargo ARGS` in the workspace root with extra variables `env`.
    pub fn cargo(&self, args: &[&str], env: &[(&str, &str)]) -> Step {
        let mut command = Command::new(&self.cargo);
        command.args(args).current_dir(&self.root);
        for (name, value) in env {
            command.env(name, value);
        }
        self.run(command, &format!("cargo {}", args.join(" ")))
    }

    fn run(&self, mut command: Command, what: &str) -> Step {
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let status = command
            .status()
            .map_err(|e| Failure::new(format!("cannot start `{what}`: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Failure::new(format!("`{what}` failed ({status})")))
        }
    }

    /// Builds the static clawpen-agent and checks that it needs no shared library; returns
    /// its path (where the bridge looks for it).
    pub fn static_agent(&self) -> Step<PathBuf> {
        self.static_build("clawpen-agent")
    }

    /// Builds the bridge statically (for its FROM-scratch image); returns its path.
    pub fn static_bridge(&self) -> Step<PathBuf> {
        self.static_build("clawpen")
    }

    /// `cargo build --release` of `package` for [`agent_target`] with the C runtime linked
    /// in, checked to name no program interpreter.
    fn static_build(&self, package: &str) -> Step<PathBuf> {
        let target = agent_target();
        // Appended to the operator's flags, which would otherwise be replaced.
        let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        flags.push_str(" -C target-feature=+crt-static");
        self.cargo(
            &["build", "--release", "--target", &target, "-p", package],
            &[("RUSTFLAGS", flags.trim())],
        )?;
        let path = self.target.join(&target).join("release").join(package);
        let bytes = std::fs::read(&path)
            .map_err(|e| Failure::new(format!("reading {}: {e}", path.display())))?;
        if !is_static_elf(&bytes) {
            return Err(Failure::new(format!(
                "{} is not statically linked (it names a program interpreter); is the \
                 glibc static library installed (Debian: libc6-dev)?",
                path.display()
            )));
        }
        eprintln!("static {package}: {}", path.display());
        Ok(path)
    }

    /// Runs `program ARGS` in the workspace root.
    pub fn command(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Step {
        let mut command = Command::new(program);
        command.args(args).current_dir(&self.root);
        for (name, value) in env {
            command.env(name, value);
        }
        self.run(command, &format!("{program} {}", args.join(" ")))
    }

    /// Builds the bridge (release or debug); returns its binary.
    pub fn bridge(&self, release: bool) -> Step<PathBuf> {
        let mut args = vec!["build", "-p", "clawpen"];
        if release {
            args.push("--release");
        }
        self.cargo(&args, &[])?;
        let profile = if release { "release" } else { "debug" };
        Ok(self.target.join(profile).join("clawpen"))
    }

    /// `clawpen image build`, with the data directory `data` when given (else the
    /// configured one).
    pub fn image(&self, bridge: &Path, data: Option<&Path>) -> Step {
        let mut command = Command::new(bridge);
        command.args(["image", "build"]).current_dir(&self.root);
        if let Some(data) = data {
            command.env("CLAWPEN_DATA_DIR", data);
        }
        self.run(command, "clawpen image build")
            .map_err(|Failure(e)| {
                Failure::new(format!(
                    "{e}; `{} doctor` says which piece is missing",
                    bridge.display()
                ))
            })
    }

    /// Replaces this process with `bridge SUBCOMMAND ARGS`, so the terminal and its signals
    /// go straight to it.
    pub fn exec(&self, bridge: &Path, subcommand: &str, args: &[String]) -> Step {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(bridge);
        command.arg(subcommand).args(args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let error = command.exec();
        Err(Failure::new(format!(
            "cannot start {}: {error}",
            bridge.display()
        )))
    }
}

/// Whether an ELF file has no program interpreter, i.e. runs in an image with no libc.
/// (The bridge has the same check in `sandbox::image`; this crate shares no code with it so
/// that it builds in seconds.)
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| bytes.get(at..at.checked_add(len)?);
    if read(0, 4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) {
        return false;
    }
    let u64_at = |at| {
        read(at, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let u16_at = |at| {
        read(at, 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(count)).all(|i| {
        let kind = read(phoff + i * usize::from(size), 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes);
        kind != Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_and_a_script_are_not_static() {
        let me = std::env::current_exe()
            .and_then(std::fs::read)
            .unwrap_or_default();
        assert!(!is_static_elf(&me), "test binaries are dynamically linked");
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(b"\x7fELF\x02"));
    }
}
