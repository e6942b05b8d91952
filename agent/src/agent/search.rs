//! Listing and searching the workspace, with caps so a big tree cannot flood the model.
//!
//! Both walk without following symlinks (a link out of the workspace must not lead the
//! walk out of it) and skip the directories that are noise for the model: version control
//! and the agent's own `.clawpen` (which holds the history).

use std::fs;
use std::path::{Path, PathBuf};

use super::fs::Workspace;

/// The most entries one listing shows.
pub const LIST_CAP: usize = 500;
/// The most matches one search shows.
pub const MATCH_CAP: usize = 100;
/// The most files one search opens.
const FILE_CAP: usize = 20_000;
/// Files bigger than this are not searched.
const MAX_SEARCHED: u64 = 2 << 20;
/// The most chars of a matching line shown.
const LINE_CHARS: usize = 200;
/// Directories never descended into.
const SKIPPED: &[&str] = &[".git", ".clawpen", "node_modules", "target"];

/// The entries of `dir` (and below, with `recursive`), relative to the workspace.
pub fn list(workspace: &Workspace, dir: &Path, recursive: bool) -> Result<String, String> {
    let shown = workspace.relative(dir);
    if !dir.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    let mut lines = Vec::new();
    let mut pending = vec![dir.to_owned()];
    let mut cut = false;
    while let Some(next) = pending.pop() {
        let mut entries: Vec<fs::DirEntry> = match fs::read_dir(&next) {
            Ok(entries) => entries.filter_map(Result::ok).collect(),
            Err(err) => return Err(format!("{shown}: {err}")),
        };
        entries.sort_by_key(fs::DirEntry::file_name);
        let mut subdirs = Vec::new();
        for entry in entries {
            if lines.len() >= LIST_CAP {
                cut = true;
                break;
            }
            let path = entry.path();
            let name = workspace.relative(&path);
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                lines.push(format!("{name}/"));
                let skipped = SKIPPED.iter().any(|skip| entry.file_name() == *skip);
                if recursive && !skipped {
                    subdirs.push(path);
                }
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map(|target| target.display().to_string());
                lines.push(format!("{name} -> {}", target.unwrap_or_default()));
            } else {
                let size = entry.metadata().map(|meta| meta.len()).unwrap_or(0);
                lines.push(format!("{name} ({size} bytes)"));
            }
        }
        // Depth first, in name order.
        pending.extend(subdirs.into_iter().rev());
        if cut {
            break;
        }
    }
    if lines.is_empty() {
        return Ok(format!("({shown} is empty)"));
    }
    let mut text = lines.join("\n");
    if cut {
        text.push_str(&format!("\n[only the first {LIST_CAP} entries are shown]"));
    }
    Ok(text)
}

/// Lines containing `query` under `root` (a directory or one file), as `path:line: text`.
pub fn search(
    workspace: &Workspace,
    root: &Path,
    query: &str,
    ignore_case: bool,
) -> Result<String, String> {
    if query.is_empty() {
        return Err("the query is empty".into());
    }
    let needle = if ignore_case {
        query.to_lowercase()
    } else {
        query.to_owned()
    };
    let mut matches = Vec::new();
    let mut opened = 0;
    let mut pending: Vec<PathBuf> = vec![root.to_owned()];
    let mut cut = false;
    'walk: while let Some(path) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let Ok(entries) = fs::read_dir(&path) else {
                continue;
            };
            let mut children: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|entry| !SKIPPED.iter().any(|skip| entry.file_name() == *skip))
                .map(|entry| entry.path())
                .collect();
            children.sort();
            pending.extend(children.into_iter().rev());
            continue;
        }
        if !meta.is_file() || meta.len() > MAX_SEARCHED {
            continue;
        }
        opened += 1;
        if opened > FILE_CAP {
            cut = true;
            break;
        }
        let Ok(bytes) = fs::read(&path) else { continue };
        if bytes.iter().take(1024).any(|byte| *byte == 0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (number, line) in text.lines().enumerate() {
            let found = if ignore_case {
                line.to_lowercase().contains(&needle)
            } else {
                line.contains(&needle)
            };
            if !found {
                continue;
            }
            if matches.len() >= MATCH_CAP {
                cut = true;
                break 'walk;
            }
            let line = match line.char_indices().nth(LINE_CHARS) {
                Some((end, _)) => format!("{}…", &line[..end]),
                None => line.to_owned(),
            };
            matches.push(format!(
                "{}:{}: {}",
                workspace.relative(&path),
                number + 1,
                line.trim_end()
            ));
        }
    }
    if matches.is_empty() {
        return Ok(format!("No matches for \"{query}\"."));
    }
    let mut text = matches.join("\n");
    if cut {
        text.push_str(&format!(
            "\n[stopped after {} matches or {FILE_CAP} files; narrow the search]",
            matches.len()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> std::io::Result<(tempfile::TempDir, Workspace)> {
        let dir = tempfile::tempdir()?;
        let ws = Workspace::open(dir.path())?;
        fs::create_dir_all(ws.root().join("src/deep"))?;
        fs::create_dir_all(ws.root().join(".clawpen"))?;
        fs::write(ws.root().join("README.md"), "Hello world\nbye\n")?;
        fs::write(ws.root().join("src/main.rs"), "fn main() {}\n// hello\n")?;
        fs::write(ws.root().join("src/deep/x.bin"), b"hello\0binary")?;
        fs::write(ws.root().join(".clawpen/history.jsonl"), "hello\n")?;
        Ok((dir, ws))
    }

    #[test]
    fn listing_is_sorted_and_optionally_recursive() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, ws) = tree()?;
        let flat = list(&ws, ws.root(), false)?;
        assert_eq!(flat, ".clawpen/\nREADME.md (16 bytes)\nsrc/");
        let deep = list(&ws, ws.root(), true)?;
        assert_eq!(
            deep,
            ".clawpen/\nREADME.md (16 bytes)\nsrc/\nsrc/deep/\nsrc/main.rs (22 bytes)\nsrc/deep/x.bin (12 bytes)"
        );
        Ok(())
    }

    #[test]
    fn search_finds_text_lines_only_and_skips_noise() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, ws) = tree()?;
        assert_eq!(
            search(&ws, ws.root(), "hello", false)?,
            "src/main.rs:2: // hello"
        );
        assert_eq!(
            search(&ws, ws.root(), "HELLO", true)?,
            "README.md:1: Hello world\nsrc/main.rs:2: // hello"
        );
        assert_eq!(
            search(&ws, ws.root(), "nope", false)?,
            "No matches for \"nope\"."
        );
        Ok(())
    }

    #[test]
    fn search_results_are_capped() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, ws) = tree()?;
        fs::write(ws.root().join("many.txt"), "needle\n".repeat(500))?;
        let text = search(&ws, ws.root(), "needle", false)?;
        assert_eq!(text.lines().count(), MATCH_CAP + 1);
        assert!(text.ends_with("narrow the search]"));
        Ok(())
    }
}
