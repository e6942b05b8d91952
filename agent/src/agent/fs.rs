//! Paths confined to the workspace.
//!
//! The box is the real boundary (read-only root, its own volume, no network), so this is
//! a guard rail, not a wall: it keeps the model's file tools on the conversation's files,
//! where its mistakes are recoverable and its work is kept, and makes a request for
//! `/etc/passwd` or `../../x` a clear tool error instead of a surprise. A path is accepted
//! when, after `.` and `..` are resolved and every existing symlink on the way followed, it
//! still lies inside the workspace root.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// It leads outside the workspace.
    #[error("`{0}` is outside the workspace; use a path inside it")]
    Outside(String),
    /// It is a symlink whose target does not exist, which a write would create anywhere.
    #[error("`{0}` is a symlink to nothing")]
    Dangling(String),
    /// The file system said no.
    #[error("`{path}`: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// What failed.
        source: io::Error,
    },
}

/// The workspace root and the rules for paths in it; cheap to clone.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The root with every symlink resolved, which resolved paths must stay under.
    root: PathBuf,
    /// The root as configured (`/workspace`), which absolute paths may also start with.
    given: PathBuf,
}

impl Workspace {
    /// The workspace at `root`, created if missing.
    pub fn open(root: &Path) -> io::Result<Workspace> {
        std::fs::create_dir_all(root)?;
        Ok(Workspace {
            root: root.canonicalize()?,
            given: root.to_owned(),
        })
    }

    /// The root directory (resolved).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the root, for status lines and `File` events.
    pub fn relative(&self, path: &Path) -> String {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        let text = relative.to_string_lossy();
        if text.is_empty() {
            ".".to_owned()
        } else {
            text.into_owned()
        }
    }

    /// The real location of `path` (relative to the root, or absolute inside it), if it
    /// stays inside the workspace. The file need not exist; its existing ancestors do.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, PathError> {
        let outside = || PathError::Outside(path.to_owned());
        let requested = Path::new(path.trim());
        let relative = if requested.is_absolute() {
            requested
                .strip_prefix(&self.given)
                .or_else(|_| requested.strip_prefix(&self.root))
                .map_err(|_| outside())?
        } else {
            requested
        };
        let mut full = self.root.clone();
        let mut depth = 0usize;
        for component in relative.components() {
            match component {
                Component::Normal(part) => {
                    full.push(part);
                    depth += 1;
                }
                Component::CurDir => {}
                Component::ParentDir if depth > 0 => {
                    full.pop();
                    depth -= 1;
                }
                _ => return Err(outside()),
            }
        }
        // Follow symlinks: the path itself if it exists, else its deepest existing ancestor
        // (the rest does not exist yet, so it holds no symlink).
        let mut existing = full.as_path();
        loop {
            match std::fs::symlink_metadata(existing) {
                Ok(meta) => {
                    let real = match existing.canonicalize() {
                        Ok(real) => real,
                        Err(_) if meta.file_type().is_symlink() => {
                            return Err(PathError::Dangling(path.to_owned()))
                        }
                        Err(source) => {
                            return Err(PathError::Io {
                                path: path.to_owned(),
                                source,
                            })
                        }
                    };
                    if !real.starts_with(&self.root) {
                        return Err(outside());
                    }
                    let rest = full.strip_prefix(existing).unwrap_or(Path::new(""));
                    return Ok(if rest.as_os_str().is_empty() {
                        real
                    } else {
                        real.join(rest)
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => match existing.parent() {
                    Some(parent) => existing = parent,
                    None => return Err(outside()),
                },
                Err(source) => {
                    return Err(PathError::Io {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn workspace() -> io::Result<(tempfile::TempDir, Workspace)> {
        let dir = tempfile::tempdir()?;
        let workspace = Workspace::open(&dir.path().join("ws"))?;
        Ok((dir, workspace))
    }

    #[test]
    fn paths_inside_resolve() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, ws) = workspace()?;
        std::fs::create_dir(ws.root().join("sub"))?;
        assert_eq!(ws.resolve("a.txt")?, ws.root().join("a.txt"));
        assert_eq!(ws.resolve("./sub/../b/c.txt")?, ws.root().join("b/c.txt"));
        assert_eq!(ws.resolve(".")?, ws.root());
        assert_eq!(ws.resolve("")?, ws.root());
        let absolute = ws.root().join("sub/x").to_string_lossy().into_owned();
        assert_eq!(ws.resolve(&absolute)?, ws.root().join("sub/x"));
        assert_eq!(ws.relative(&ws.resolve("sub/x")?), "sub/x");
        Ok(())
    }

    #[test]
    fn escapes_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (dir, ws) = workspace()?;
        std::fs::write(dir.path().join("secret"), "s")?;
        for path in ["../secret", "a/../../secret", "/etc/passwd", "/"] {
            assert!(
                matches!(ws.resolve(path), Err(PathError::Outside(_))),
                "{path}"
            );
        }
        Ok(())
    }

    #[test]
    fn symlinks_out_are_refused_and_in_are_followed() -> Result<(), Box<dyn std::error::Error>> {
        let (dir, ws) = workspace()?;
        std::fs::write(dir.path().join("secret"), "s")?;
        std::fs::create_dir(dir.path().join("elsewhere"))?;
        symlink(dir.path().join("secret"), ws.root().join("link"))?;
        symlink(dir.path().join("elsewhere"), ws.root().join("dir"))?;
        symlink(dir.path().join("nothing"), ws.root().join("dangling"))?;
        std::fs::write(ws.root().join("real.txt"), "r")?;
        symlink("real.txt", ws.root().join("inside"))?;
        assert!(matches!(ws.resolve("link"), Err(PathError::Outside(_))));
        assert!(matches!(
            ws.resolve("dir/new.txt"),
            Err(PathError::Outside(_))
        ));
        assert!(matches!(
            ws.resolve("dangling"),
            Err(PathError::Dangling(_))
        ));
        assert_eq!(ws.resolve("inside")?, ws.root().join("real.txt"));
        Ok(())
    }
}
