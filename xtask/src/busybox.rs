//! A static busybox for the box image: the shell and tools of every box.
//!
//! Looked for where the bridge looks (`CLAWPEN_BUSYBOX`, `/bin/busybox`, `/usr/bin/busybox`,
//! then `busybox-static/` in the target directory); when none is static, Debian's
//! `busybox-static` package provides one: installed as root, otherwise downloaded with
//! `apt-get download` and unpacked into the target directory, so no root is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cargo::is_static_elf;
use crate::{Failure, Step};

/// Where the unpacked package goes inside the target directory. The bridge looks here too
/// (`sandbox::image`), so a checkout's `clawpen` finds it without `CLAWPEN_BUSYBOX`.
const UNPACKED: &str = "busybox-static";

/// Places a busybox may be: the operator's choice, the system's, the one unpacked here.
fn candidates(target: &Path) -> Vec<PathBuf> {
    let named = std::env::var_os("CLAWPEN_BUSYBOX")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let unpacked = target.join(UNPACKED);
    named
        .into_iter()
        .chain([
            PathBuf::from("/bin/busybox"),
            PathBuf::from("/usr/bin/busybox"),
            unpacked.join("bin/busybox"),
            unpacked.join("usr/bin/busybox"),
        ])
        .collect()
}

/// The first static busybox among the candidates.
fn find(target: &Path) -> Option<PathBuf> {
    candidates(target).into_iter().find(|path| {
        std::fs::read(path)
            .map(|bytes| is_static_elf(&bytes))
            .unwrap_or(false)
    })
}

/// A static busybox, found or fetched; its path.
pub fn ensure(target: &Path) -> Step<PathBuf> {
    if let Some(found) = find(target) {
        eprintln!("busybox: {}", found.display());
        return Ok(found);
    }
    if let Some(named) = std::env::var_os("CLAWPEN_BUSYBOX").filter(|v| !v.is_empty()) {
        return Err(Failure::new(format!(
            "CLAWPEN_BUSYBOX={} is not a static busybox; unset it to let xtask fetch one",
            PathBuf::from(named).display()
        )));
    }
    if is_root() {
        install()?;
    } else {
        download(&target.join(UNPACKED))?;
    }
    find(target).ok_or_else(|| {
        Failure::new(format!(
            "busybox-static was installed but no static busybox is at any of: {}",
            candidates(target)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Whether we run as root (the real uid in /proc, no libc call needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, quietly unless it fails.
fn run(program: &str, args: &[&str], dir: Option<&Path>) -> Step {
    let mut command = Command::new(program);
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let shown = format!("{program} {}", args.join(" "));
    let out = command.output().map_err(|e| {
        Failure::new(format!(
            "cannot run `{shown}`: {e} (this step needs Debian's apt; elsewhere install a \
             static busybox and set CLAWPEN_BUSYBOX to it)"
        ))
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Failure::new(format!(
        "`{shown}` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// As root: `apt-get install busybox-static`, updating the package lists first if they
/// do not know it (a fresh machine has none).
fn install() -> Step {
    eprintln!("busybox: apt-get install busybox-static");
    let install = || run("apt-get", &["install", "-y", "-qq", "busybox-static"], None);
    if install().is_ok() {
        return Ok(());
    }
    run("apt-get", &["update", "-qq"], None)?;
    install()
}

/// Not root: `apt-get download busybox-static` and unpack it into `into`.
fn download(into: &Path) -> Step {
    eprintln!(
        "busybox: apt-get download busybox-static, unpacked into {}",
        into.display()
    );
    let cache = into.with_extension("download");
    std::fs::create_dir_all(&cache)
        .map_err(|e| Failure::new(format!("creating {}: {e}", cache.display())))?;
    run("apt-get", &["download", "busybox-static"], Some(&cache)).map_err(|Failure(e)| {
        Failure::new(format!(
            "{e}\nThe package lists may be missing: run `sudo apt-get update` once, or \
             `sudo apt-get install busybox-static`, then try again"
        ))
    })?;
    let deb = std::fs::read_dir(&cache)
        .map_err(|e| Failure::new(format!("reading {}: {e}", cache.display())))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or_else(|| Failure::new("apt-get download left no .deb file"))?;
    let (Some(deb), Some(into_str)) = (deb.to_str(), into.to_str()) else {
        return Err(Failure::new("the target directory's path is not UTF-8"));
    };
    run("dpkg-deb", &["-x", deb, into_str], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unpacked_package_is_a_candidate_after_the_system_ones() {
        let list = candidates(Path::new("/t"));
        let system = list.iter().position(|p| p == Path::new("/bin/busybox"));
        let unpacked = list
            .iter()
            .position(|p| p == Path::new("/t/busybox-static/bin/busybox"));
        assert!(system < unpacked, "{list:?}");
        assert!(list.contains(&PathBuf::from("/t/busybox-static/usr/bin/busybox")));
    }
}
