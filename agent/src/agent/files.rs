//! Reading, writing and editing files for the model's tools.
//!
//! Paths arrive already confined to the workspace (see `fs`); `shown` is the path as the
//! model should see it in messages. Every failure is a message the model can act on.

use std::io::Read;
use std::path::Path;

use super::memory::clip;

/// The most text of one file read given to the model.
pub const READ_CAP: usize = 48 * 1024;
/// Files bigger than this are read only up to it.
const READ_LIMIT: u64 = 8 << 20;

/// Create or replace the file, and its parent directories.
pub fn write(path: &Path, shown: &str, content: &str) -> Result<String, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|err| format!("{shown}: {err}"))?;
    }
    std::fs::write(path, content).map_err(|err| format!("{shown}: {err}"))?;
    Ok(format!("Wrote {} bytes to {shown}.", content.len()))
}

/// Read `path`, optionally lines `start..start+count` (from 1), clipped to [`READ_CAP`].
pub fn read(
    path: &Path,
    shown: &str,
    start: Option<u64>,
    count: Option<u64>,
) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|err| format!("{shown}: {err}"))?;
    let size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    if file.metadata().is_ok_and(|meta| meta.is_dir()) {
        return Err(format!("{shown} is a directory; use list_files"));
    }
    let mut bytes = Vec::new();
    file.take(READ_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("{shown}: {err}"))?;
    if bytes.iter().take(8192).any(|byte| *byte == 0) {
        return Err(format!(
            "{shown} is a binary file ({size} bytes); inspect it with shell tools such as `od` or `head -c`"
        ));
    }
    let text = String::from_utf8_lossy(&bytes);
    if text.is_empty() {
        return Ok(format!("({shown} is empty)"));
    }
    let total = text.lines().count();
    let first = usize::try_from(start.unwrap_or(1).max(1)).unwrap_or(usize::MAX);
    let wanted = count.map(|count| usize::try_from(count).unwrap_or(usize::MAX));
    let whole = first == 1 && wanted.is_none_or(|wanted| wanted >= total);
    let mut out = if whole {
        text.into_owned()
    } else {
        let lines: Vec<&str> = text
            .lines()
            .skip(first - 1)
            .take(wanted.unwrap_or(usize::MAX))
            .collect();
        let last = first - 1 + lines.len();
        format!("[lines {first}–{last} of {total}]\n{}", lines.join("\n"))
    };
    if out.len() > READ_CAP {
        out = clip(&out, READ_CAP);
        out.push_str(&format!(
            "\n[cut at {} KB; read further with start_line and max_lines ({total} lines in all)]",
            READ_CAP / 1024
        ));
    } else if size > READ_LIMIT {
        out.push_str(&format!(
            "\n[only the first {} MB were read]",
            READ_LIMIT >> 20
        ));
    }
    Ok(out)
}

/// Replace the one occurrence of `old` in the file by `new`.
pub fn edit(path: &Path, shown: &str, old: &str, new: &str) -> Result<String, String> {
    if old.is_empty() {
        return Err("old_text is empty; give the exact text to replace".into());
    }
    let text = std::fs::read_to_string(path).map_err(|err| format!("{shown}: {err}"))?;
    match text.matches(old).count() {
        0 => Err(format!(
            "old_text was not found in {shown}; read the file and copy the text exactly, whitespace included"
        )),
        1 => {
            let edited = text.replacen(old, new, 1);
            std::fs::write(path, &edited).map_err(|err| format!("{shown}: {err}"))?;
            Ok(format!(
                "Edited {shown}: replaced {} line(s) with {}.",
                old.lines().count().max(1),
                new.lines().count()
            ))
        }
        n => Err(format!(
            "old_text occurs {n} times in {shown}; include more of the surrounding text so it matches exactly once"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_files_ranges_and_refuses_binary() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.txt");
        write(&path, "a.txt", "1\n2\n3\n4\n")?;
        assert_eq!(read(&path, "a.txt", None, None)?, "1\n2\n3\n4\n");
        assert_eq!(
            read(&path, "a.txt", Some(2), Some(2))?,
            "[lines 2–3 of 4]\n2\n3"
        );
        assert_eq!(read(&path, "a.txt", Some(4), None)?, "[lines 4–4 of 4]\n4");
        let big = dir.path().join("big.txt");
        std::fs::write(&big, "x".repeat(READ_CAP * 2))?;
        let text = read(&big, "big.txt", None, None)?;
        assert!(
            text.len() < READ_CAP + 200 && text.contains("start_line"),
            "{}",
            text.len()
        );
        let binary = dir.path().join("b.bin");
        std::fs::write(&binary, b"\x7fELF\0\0")?;
        assert!(read(&binary, "b.bin", None, None).is_err_and(|err| err.contains("binary")));
        assert!(read(dir.path(), ".", None, None).is_err_and(|err| err.contains("directory")));
        Ok(())
    }

    #[test]
    fn an_edit_replaces_exactly_one_exact_match() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.rs");
        std::fs::write(&path, "let a = 1;\nlet b = 1;\n")?;
        assert!(
            edit(&path, "a.rs", "= 1;", "= 2;").is_err_and(|err| err.contains("occurs 2 times"))
        );
        assert!(edit(&path, "a.rs", "let  a", "x").is_err_and(|err| err.contains("not found")));
        assert!(edit(&path, "a.rs", "", "x").is_err_and(|err| err.contains("empty")));
        assert_eq!(std::fs::read_to_string(&path)?, "let a = 1;\nlet b = 1;\n");
        edit(&path, "a.rs", "let b = 1;", "let b = 2;\nlet c = 3;")?;
        assert_eq!(
            std::fs::read_to_string(&path)?,
            "let a = 1;\nlet b = 2;\nlet c = 3;\n"
        );
        Ok(())
    }
}
