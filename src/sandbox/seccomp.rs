//! clawpen's own seccomp profile for every box: an allowlist of the system calls a busybox
//! shell, the agent and ordinary programs in the workspace need, in the engine's profile
//! format, passed through the Docker API as `seccomp=<profile>`.
//!
//! It starts from the engine's default profile (moby's `profiles/seccomp/default.json`) as
//! it applies to a box, which has no capabilities (so every call the default allows only
//! with a capability is out), and leaves out on top of that:
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`: a long record of kernel
//!   privilege escalations, and the engine's default profile allows them (Docker 20.10);
//! - `ptrace`, `process_vm_readv`, `process_vm_writev`: reading and writing another
//!   process's memory, which the agent's neighbours in the box have no reason to do;
//! - legacy AIO (`io_setup`, `io_submit`, …), `remap_file_pages`, `modify_ldt`,
//!   `name_to_handle_at`, `fanotify_mark`, `memfd_secret`, `pkey_*`, the clock adjusters:
//!   old or rarely used kernel surface that nothing in a box needs;
//! - every 32-bit compatibility entry point: the profile names no sub-architecture, so a
//!   32-bit system call (`int 0x80`) is refused whatever its number.
//!
//! io_uring and `clone3` fail with ENOSYS rather than EPERM: programs and C libraries take
//! ENOSYS as "this kernel lacks it" and fall back (glibc's `clone3` to `clone`, io_uring
//! users to threads), where EPERM would be an error. Anything else not listed fails with
//! ENOSYS too where the engine honours the profile's `defaultErrnoRet`, and with EPERM
//! where it does not (Docker 20.10), as under the engine's own profile.
//!
//! Engines that cannot apply a profile of their own (some rootless or VM-backed setups)
//! can be told `[box] seccomp = "engine"`, which leaves the engine's default in force.

use serde::Deserialize;

/// The profile as shipped (readable, with a comment per group of calls).
const PROFILE: &str = include_str!("seccomp.json");

/// System calls that must never be in the allowlist.
pub const REFUSED: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// The part of the profile format read here, to count and check what it allows.
#[derive(Deserialize)]
struct Profile {
    #[serde(rename = "syscalls")]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    names: Vec<String>,
    action: String,
}

/// A seccomp profile ready for the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seccomp {
    /// The profile as one line of JSON, for the container's `security_opt`.
    json: String,
    /// How many distinct system calls it allows (some only with given arguments).
    allowed: usize,
}

/// Why the embedded profile is unusable; only a broken build can cause it.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not the JSON the engine expects.
    #[error("the built-in seccomp profile is not valid JSON: {0}")]
    Invalid(#[from] serde_json::Error),
    /// The profile allows a call it must refuse.
    #[error("the built-in seccomp profile allows {0}")]
    Allows(&'static str),
}

impl Seccomp {
    /// clawpen's profile, checked: it parses and allows none of [`REFUSED`].
    pub fn clawpen() -> Result<Self, SeccompError> {
        let value: serde_json::Value = serde_json::from_str(PROFILE)?;
        let profile = Profile::deserialize(&value)?;
        let mut names: Vec<&str> = profile
            .rules
            .iter()
            .filter(|rule| rule.action == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule.names.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        if let Some(refused) = REFUSED.iter().find(|r| names.contains(r)) {
            return Err(SeccompError::Allows(refused));
        }
        Ok(Self {
            allowed: names.len(),
            json: value.to_string(),
        })
    }

    /// The container's `security_opt` entry that applies it.
    pub fn security_opt(&self) -> String {
        format!("seccomp={}", self.json)
    }

    /// How many distinct system calls it allows.
    pub fn allowed(&self) -> usize {
        self.allowed
    }

    /// What `clawpen doctor` says about it.
    pub fn describe(&self) -> String {
        format!(
            "clawpen profile ({} system calls allowed, io_uring refused)",
            self.allowed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Seccomp {
        Seccomp::clawpen().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_profile_refuses_io_uring_and_allows_what_a_shell_needs() {
        let seccomp = profile();
        let value: serde_json::Value =
            serde_json::from_str(&seccomp.json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            value["defaultErrnoRet"], 38,
            "ENOSYS, so programs fall back"
        );
        let rules = value["syscalls"].as_array().cloned().unwrap_or_default();
        let allowed: Vec<&str> = rules
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().into_iter().flatten())
            .filter_map(|name| name.as_str())
            .collect();
        for refused in REFUSED.iter().chain(&["ptrace", "unshare", "mount", "bpf"]) {
            assert!(!allowed.contains(refused), "{refused} is allowed");
        }
        for needed in [
            "execve",
            "clone",
            "wait4",
            "epoll_wait",
            "openat",
            "read",
            "write",
            "kill",
        ] {
            assert!(allowed.contains(&needed), "{needed} is missing");
        }
        assert!(seccomp.allowed() > 200, "{}", seccomp.allowed());
        // io_uring is refused with ENOSYS, not left to the default action (EPERM on engines
        // that ignore `defaultErrnoRet`), so its users fall back.
        let refusal = rules.iter().find(|rule| {
            rule["names"]
                .as_array()
                .is_some_and(|n| n.contains(&"io_uring_setup".into()))
        });
        let refusal = refusal.cloned().unwrap_or_default();
        assert_eq!(refusal["action"], "SCMP_ACT_ERRNO");
        assert_eq!(refusal["errnoRet"], 38);
        assert!(seccomp.security_opt().starts_with("seccomp={"));
        assert!(!seccomp.security_opt().contains('\n'), "one line");
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let value: serde_json::Value =
            serde_json::from_str(&profile().json).unwrap_or_else(|e| panic!("{e}"));
        let clone = value["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|rule| rule["names"] == serde_json::json!(["clone"]));
        let arg = clone
            .map(|rule| rule["args"][0].clone())
            .unwrap_or_default();
        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
        // CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
        let flags: u64 = 0x0002_0000
            | 0x0200_0000
            | 0x0400_0000
            | 0x0800_0000
            | 0x1000_0000
            | 0x2000_0000
            | 0x4000_0000;
        assert_eq!(arg["value"], flags);
        assert_eq!(arg["valueTwo"], 0);
    }
}
