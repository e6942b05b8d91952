//! The mount allowlist: which host paths a box may see.
//!
//! Nothing of the host is mounted into a box unless the operator listed it, and even a
//! listed path is refused when it looks like credentials (after resolving symlinks, so a
//! link named `notes` pointing at `~/.ssh` is refused too).

use std::path::{Component, Path, PathBuf};

use crate::config::MountRule;

/// Path components that hold credentials; a mount containing one of them is refused.
const CREDENTIAL_NAMES: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".docker",
    ".kube",
    ".azure",
    ".config/gcloud",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    "credentials",
    "id_rsa",
    "id_ed25519",
];

/// A host path that passed the checks, with where it appears in the box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedMount {
    /// The resolved host path.
    pub host: PathBuf,
    /// Where the box sees it.
    pub target: String,
    /// Whether the box may write to it.
    pub writable: bool,
}

/// Why a mount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// The path does not exist or cannot be resolved.
    #[error("mount {path}: cannot resolve: {reason}")]
    Unresolvable {
        /// The path as configured.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The path (or what it links to) looks like credentials.
    #[error("mount {path}: refused, {resolved} looks like credentials ({name})")]
    Credential {
        /// The path as configured.
        path: PathBuf,
        /// Where it resolves.
        resolved: PathBuf,
        /// The credential-looking part.
        name: String,
    },
    /// The path is not under any allowlisted path.
    #[error("mount {path}: refused, not in the mount allowlist")]
    NotAllowed {
        /// The requested path.
        path: PathBuf,
    },
    /// The Docker socket or a system directory.
    #[error("mount {path}: refused, {resolved} is a system path or the Docker socket")]
    System {
        /// The path as configured.
        path: PathBuf,
        /// Where it resolves.
        resolved: PathBuf,
    },
}

fn credential_part(path: &Path) -> Option<String> {
    let text = path.to_string_lossy();
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().to_lowercase()),
            _ => None,
        })
        .collect();
    for name in CREDENTIAL_NAMES {
        if name.contains('/') {
            if text.contains(name) {
                return Some((*name).to_string());
            }
        } else if parts.iter().any(|p| p == name) {
            return Some((*name).to_string());
        }
    }
    // `.env`, `.env.local`, `prod.env`: dotenv files.
    parts
        .iter()
        .find(|p| *p == ".env" || p.starts_with(".env.") || p.ends_with(".env"))
        .cloned()
}

fn is_system(path: &Path) -> bool {
    const SYSTEM: &[&str] = &[
        "/", "/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/var/run", "/run",
    ];
    SYSTEM.iter().any(|s| path == Path::new(s))
        || path.ends_with("docker.sock")
        || path.starts_with("/proc")
        || path.starts_with("/sys")
        || path.starts_with("/var/lib/docker")
}

fn resolve(path: &Path) -> Result<PathBuf, MountError> {
    let resolved = std::fs::canonicalize(path).map_err(|e| MountError::Unresolvable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(name) = credential_part(path).or_else(|| credential_part(&resolved)) {
        return Err(MountError::Credential {
            path: path.to_path_buf(),
            resolved,
            name,
        });
    }
    if is_system(&resolved) {
        return Err(MountError::System {
            path: path.to_path_buf(),
            resolved,
        });
    }
    Ok(resolved)
}

/// Resolve the allowlist's roots, refusing credential-looking and system paths.
pub fn check_allowlist(roots: &[PathBuf]) -> Result<Vec<PathBuf>, MountError> {
    roots.iter().map(|root| resolve(root)).collect()
}

/// Check one requested mount: it must resolve inside an allowlisted root and must not look
/// like credentials. The box sees it read-only at `/mnt/<file name>` unless `writable`.
pub fn check_mount(rule: &MountRule, roots: &[PathBuf]) -> Result<AllowedMount, MountError> {
    let resolved = resolve(&rule.path)?;
    if !roots.iter().any(|root| resolved.starts_with(root)) {
        return Err(MountError::NotAllowed {
            path: rule.path.clone(),
        });
    }
    let name = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "host".into());
    Ok(AllowedMount {
        host: resolved,
        target: format!("/mnt/{name}"),
        writable: rule.writable,
    })
}

/// Check the operator's instructions file: a readable regular file that does not look
/// like credentials.
pub fn check_instructions(path: &Path) -> Result<PathBuf, MountError> {
    use std::os::unix::fs::PermissionsExt;
    let resolved = resolve(path)?;
    let unreadable = |reason: &str| MountError::Unresolvable {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let meta = std::fs::metadata(&resolved).map_err(|e| unreadable(&e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file"));
    }
    // The box user is not the file's owner: it must be readable by others.
    if meta.permissions().mode() & 0o004 == 0 {
        return Err(unreadable("not readable by the box user (chmod o+r)"));
    }
    Ok(resolved)
}

/// Check every requested mount against the allowlist; the first refusal is the error.
pub fn check_mounts(
    rules: &[MountRule],
    allowlist: &[PathBuf],
) -> Result<Vec<AllowedMount>, MountError> {
    let roots = check_allowlist(allowlist)?;
    rules.iter().map(|rule| check_mount(rule, &roots)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &Path) -> MountRule {
        MountRule {
            path: path.to_path_buf(),
            writable: false,
        }
    }

    fn dir_in(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn allowlisted_directories_are_mounted_read_only() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir_in(tmp.path(), "data");
        let sub = dir_in(&data, "reports");
        let mounts = check_mounts(&[rule(&sub)], &[data]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mounts[0].target, "/mnt/reports");
        assert!(!mounts[0].writable);
    }

    #[test]
    fn paths_outside_the_allowlist_are_refused() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir_in(tmp.path(), "data");
        let other = dir_in(tmp.path(), "other");
        let err = check_mounts(&[rule(&other)], &[data]).err();
        assert!(
            matches!(err, Some(MountError::NotAllowed { .. })),
            "{err:?}"
        );
        // A symlink inside the allowlist that points outside it is outside.
        let tmp2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir_in(tmp2.path(), "root");
        std::os::unix::fs::symlink(&other, root.join("escape")).unwrap_or_else(|e| panic!("{e}"));
        let err = check_mounts(&[rule(&root.join("escape"))], &[root]).err();
        assert!(
            matches!(err, Some(MountError::NotAllowed { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn credential_paths_are_refused_even_when_listed_or_linked() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let home = dir_in(tmp.path(), "home");
        let ssh = dir_in(&home, ".ssh");
        let err = check_mounts(&[rule(&ssh)], std::slice::from_ref(&home)).err();
        assert!(
            matches!(err, Some(MountError::Credential { .. })),
            "{err:?}"
        );
        let err = check_mounts(&[], std::slice::from_ref(&ssh)).err();
        assert!(
            matches!(err, Some(MountError::Credential { .. })),
            "{err:?}"
        );
        std::os::unix::fs::symlink(&ssh, home.join("notes")).unwrap_or_else(|e| panic!("{e}"));
        let err = check_mounts(&[rule(&home.join("notes"))], std::slice::from_ref(&home)).err();
        assert!(
            matches!(err, Some(MountError::Credential { .. })),
            "{err:?}"
        );
        std::fs::write(home.join(".env"), "KEY=1").unwrap_or_else(|e| panic!("{e}"));
        let err = check_mounts(&[rule(&home.join(".env"))], &[home]).err();
        assert!(
            matches!(err, Some(MountError::Credential { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn instructions_must_be_a_file_the_box_user_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = tmp.path().join("instructions.md");
        std::fs::write(&file, "be kind").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = check_instructions(&file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("chmod o+r"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(check_instructions(&file).is_ok());
        assert!(
            check_instructions(tmp.path()).is_err(),
            "a directory passed"
        );
    }

    #[test]
    fn system_and_missing_paths_are_refused() {
        let err = check_allowlist(&[PathBuf::from("/etc")]).err();
        assert!(matches!(err, Some(MountError::System { .. })), "{err:?}");
        let err = check_allowlist(&[PathBuf::from("/nonexistent/clawpen")]).err();
        assert!(
            matches!(err, Some(MountError::Unresolvable { .. })),
            "{err:?}"
        );
    }
}
