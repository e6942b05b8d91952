//! Isolation and hardening of boxes, checked from inside real boxes on the real engine.

mod support;

use std::time::Duration;

use clawpen::config::MountRule;
use clawpen::sandbox::spec;
use support::{eventually, TestBridge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_conversations_get_two_boxes_and_cannot_see_each_other() {
    let t = TestBridge::start(|_| {}).await;
    assert_eq!(t.ask("alice", "hello from alice").await, "hello from alice");
    assert_eq!(t.ask("bob", "hello from bob").await, "hello from bob");

    let (alice, bob) = (t.container("alice").await, t.container("bob").await);
    assert_ne!(alice, bob);
    let (code, _) = t
        .exec(
            "alice",
            &["sh", "-c", "echo secret-plan > /workspace/plan.txt"],
        )
        .await;
    assert_eq!(code, 0);
    let (code, out) = t.exec("alice", &["cat", "/workspace/plan.txt"]).await;
    assert_eq!((code, out.trim()), (0, "secret-plan"));
    let (code, out) = t
        .exec(
            "bob",
            &["sh", "-c", "ls -a /workspace; cat /workspace/plan.txt"],
        )
        .await;
    assert_ne!(code, 0, "bob's box sees alice's file: {out}");
    assert!(!out.contains("secret-plan"), "{out}");
    // Two volumes, one per conversation, each mounted at its box's /workspace.
    let (_, mounts) = t.exec("alice", &["cat", "/proc/self/mounts"]).await;
    assert!(mounts.contains(" /workspace "), "{mounts}");
    let filter = format!(
        "{}={}",
        spec::LABEL_INSTANCE,
        t.bridge.router.sandbox().instance()
    );
    let options = bollard::query_parameters::ListVolumesOptions {
        filters: Some([("label".to_string(), vec![filter])].into_iter().collect()),
    };
    let volumes = t
        .bridge
        .router
        .sandbox()
        .docker()
        .list_volumes(Some(options))
        .await;
    let mut names: Vec<String> = volumes
        .ok()
        .and_then(|v| v.volumes)
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    names.sort();
    let mut expected = vec![
        spec::volume_name(
            t.bridge.router.sandbox().instance(),
            &TestBridge::key("alice"),
        ),
        spec::volume_name(
            t.bridge.router.sandbox().instance(),
            &TestBridge::key("bob"),
        ),
    ];
    expected.sort();
    assert_eq!(names, expected);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_is_hardened_and_holds_no_secret() {
    const KEY: &str = "sk-ant-test-7f3e9a1c-never-in-a-box";
    const TOKEN: &str = "123456:telegram-token-never-in-a-box";
    let t = TestBridge::start(|c| {
        c.anthropic_api_key = Some(clawpen::config::Secret::new(KEY));
        c.adapters
            .set_env("TELEGRAM_BOT_TOKEN", TOKEN)
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .await;
    assert_eq!(t.ask("hard", "ping").await, "ping");

    // Only the loopback interface.
    let (_, dev) = t.exec("hard", &["cat", "/proc/net/dev"]).await;
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{dev}");
    // Read-only root.
    let (code, out) = t.exec("hard", &["touch", "/evil"]).await;
    assert_ne!(code, 0, "writing to / worked: {out}");
    // /tmp and the workspace are writable.
    assert_eq!(
        t.exec("hard", &["touch", "/tmp/ok", "/workspace/ok"])
            .await
            .0,
        0
    );
    // Not root.
    let (_, uid) = t.exec("hard", &["id", "-u"]).await;
    assert_eq!(uid.trim(), "1000");
    // No effective (or bounding) capabilities, no new privileges.
    let (_, status) = t.exec("hard", &["cat", "/proc/1/status"]).await;
    for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_default();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{status}"
    );
    // No secret in the agent's environment or anywhere in the box's files.
    let (_, environ) = t
        .exec(
            "hard",
            &["sh", "-c", "tr '\\0' '\\n' < /proc/1/environ; env"],
        )
        .await;
    assert!(environ.contains("CLAWPEN_PROVIDER=echo"), "{environ}");
    // Every secret the bridge holds (the two configured above).
    let secrets: Vec<String> = t
        .config
        .secrets()
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    assert_eq!(secrets.len(), 2);
    for secret in &secrets {
        assert!(!environ.contains(secret), "secret in the environment");
        let (code, found) = t
            .exec(
                "hard",
                &[
                    "sh",
                    "-c",
                    &format!(
                        "grep -rl '{secret}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null"
                    ),
                ],
            )
            .await;
        assert_ne!(code, 0, "secret found in files: {found}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stays_in_its_pids_limit_and_others_keep_talking() {
    let t = TestBridge::start(|c| c.limits.pids = 64).await;
    assert_eq!(t.ask("bomber", "hi").await, "hi");
    let bomber = t.container("bomber").await;
    let docker = t.bridge.router.sandbox().docker().clone();
    // Every `b` starts a sleeper and two more `b`s, until forks fail at the limit: the box
    // is then full of live sleepers for 10 s, and of ended processes all along.
    let bomb = tokio::spawn({
        let (docker, bomber) = (docker.clone(), bomber.clone());
        async move {
            support::exec_in(
                &docker,
                bomber.as_str(),
                &["sh", "-c", "b() { sleep 10 & b & b & }; b; sleep 10"],
            )
            .await
        }
    });
    // Going off: the engine counts more than half of the box's pids in use.
    let exploded = eventually(Duration::from_secs(30), || {
        let (docker, bomber) = (docker.clone(), bomber.clone());
        async move {
            let (current, _) = pids_of(&docker, bomber.as_str()).await;
            current.is_some_and(|c| c > 32)
        }
    })
    .await;
    assert!(exploded, "the bomb never went off");
    // Another conversation is answered meanwhile.
    assert_eq!(t.ask("bystander", "still here?").await, "still here?");
    // The engine's own accounting (cgroup v1 or v2 alike): the bomb stays in its limit.
    let (current, limit) = pids_of(&docker, bomber.as_str()).await;
    assert_eq!(limit, Some(64), "pids limit");
    assert!(
        current.is_some_and(|c| c <= 64),
        "pids.current = {current:?}"
    );
    let _ = bomb.await;
    // Once the sleepers end, the box's init has reaped every one of them: no zombie keeps
    // the box at its limit, and the same box answers again without a restart.
    let drained = eventually(Duration::from_secs(30), || {
        let (docker, bomber) = (docker.clone(), bomber.clone());
        async move {
            let (current, _) = pids_of(&docker, bomber.as_str()).await;
            current.is_some_and(|c| c < 16)
        }
    })
    .await;
    let (current, _) = pids_of(&docker, bomber.as_str()).await;
    assert!(drained, "pids.current stays at {current:?} after the bomb");
    assert_eq!(t.zombies("bomber").await, 0);
    assert_eq!(t.ask("bomber", "after the storm").await, "after the storm");
    assert_eq!(t.container("bomber").await, bomber, "the box was restarted");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_mounts_are_read_only_and_others_are_refused() {
    let host = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let allowed = host.path().join("shared");
    let data = allowed.join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.join("notes.txt"), "hello from the host").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(allowed.join(".ssh")).unwrap_or_else(|e| panic!("{e}"));
    let outside = host.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));

    let (allow, d) = (allowed.clone(), data.clone());
    let t = TestBridge::start(move |c| {
        c.mount_allowlist = vec![allow];
        c.mounts = vec![MountRule {
            path: d,
            writable: false,
        }];
    })
    .await;
    assert_eq!(t.ask("mounted", "hi").await, "hi");
    let (code, out) = t.exec("mounted", &["cat", "/mnt/data/notes.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "hello from the host"));
    let (code, out) = t.exec("mounted", &["touch", "/mnt/data/new"]).await;
    assert_ne!(code, 0, "read-only mount was writable: {out}");
    t.stop().await;

    for (path, expected) in [
        (outside, "not in the mount allowlist"),
        (allowed.join(".ssh"), "looks like credentials"),
    ] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut config = support::test_config(dir.path());
        config.mount_allowlist = vec![allowed.clone()];
        config.mounts = vec![MountRule {
            path,
            writable: false,
        }];
        let err = clawpen::daemon::Bridge::start(&config, Vec::new())
            .await
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains(expected), "{err}");
    }
}

/// The container's current process count and limit, as the engine reports them.
async fn pids_of(docker: &bollard::Docker, container: &str) -> (Option<u64>, Option<u64>) {
    use futures_util::StreamExt;
    let options = bollard::query_parameters::StatsOptions {
        stream: false,
        one_shot: true,
    };
    let stats = docker.stats(container, Some(options)).next().await;
    let pids = stats.and_then(Result::ok).and_then(|s| s.pids_stats);
    (
        pids.as_ref().and_then(|p| p.current),
        pids.as_ref().and_then(|p| p.limit),
    )
}

/// A static x86-64 Linux program of 176 bytes that calls `io_uring_setup(1, &params)` and
/// exits with the error number it got (0 if the call succeeded). Busybox cannot make an
/// arbitrary system call, so the test writes this into the box and runs it there.
///
/// ELF header and one loadable segment at 0x400000, then: zero 128 bytes of stack for the
/// parameters, `mov edi, 1; mov rsi, rsp; mov eax, 425; syscall`, then `exit(-rax)` when
/// rax is negative and `exit(0)` otherwise.
const URING_PROBE: [u8; 176] = [
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x3e, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x38, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // The code.
    0x48, 0x81, 0xec, 0x80, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe7, 0x31, 0xc0, 0xb9, 0x80, 0x00, 0x00,
    0x00, 0xf3, 0xaa, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe6, 0xb8, 0xa9, 0x01, 0x00, 0x00,
    0x0f, 0x05, 0x48, 0x89, 0xc7, 0x48, 0xf7, 0xdf, 0x48, 0x85, 0xc0, 0x79, 0x02, 0xeb, 0x02, 0x31,
    0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_runs_under_clawpens_seccomp_profile_which_refuses_io_uring() {
    let t = TestBridge::start(|_| {}).await;
    assert_eq!(t.ask("uring", "hi").await, "hi");
    // The engine holds the profile as the box's security option.
    let sandbox = t.bridge.router.sandbox();
    let profile = sandbox
        .seccomp()
        .map(|s| s.security_opt())
        .unwrap_or_else(|| panic!("no seccomp profile by default"));
    let container = t.container("uring").await;
    let info = sandbox
        .docker()
        .inspect_container(container.as_str(), None)
        .await
        .unwrap_or_else(|e| panic!("inspect: {e}"));
    let options = info
        .host_config
        .and_then(|h| h.security_opt)
        .unwrap_or_default();
    assert!(options.contains(&profile), "{options:?}");

    // A program in the box asks for an io_uring and is told the kernel has none.
    let bytes: String = URING_PROBE.iter().map(|b| format!("\\{b:03o}")).collect();
    let script = format!(
        "printf '{bytes}' > /workspace/probe && chmod +x /workspace/probe && /workspace/probe; \
         echo \"io_uring_setup: $?\"; rm -f /workspace/probe"
    );
    let (_, out) = t.exec("uring", &["sh", "-c", &script]).await;
    assert_eq!(out.trim(), "io_uring_setup: 38", "38 is ENOSYS");

    // The shell still does what shells do: pipes, background jobs, files.
    let (code, out) = t
        .exec(
            "uring",
            &[
                "sh",
                "-c",
                "echo hello | tr a-z A-Z > /tmp/x & wait; cat /tmp/x",
            ],
        )
        .await;
    assert_eq!((code, out.trim()), (0, "HELLO"));
    // And the agent still answers.
    assert_eq!(t.ask("uring", "still talking").await, "still talking");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped_so_zombies_never_fill_the_pids_limit() {
    let t = TestBridge::start(|c| c.limits.pids = 64).await;
    assert_eq!(t.ask("orphans", "hi").await, "hi");
    // Each subshell starts a sleep and ends at once, so the sleep is reparented to the
    // box's PID 1 and, when it ends, is a zombie until PID 1 reaps it. Three rounds of 40
    // orphans each: without reaping, the second round already finds no room to fork.
    let orphans = "fail=0; for i in $(seq 40); do (sleep 0.1 &) || fail=1; done; exit $fail";
    for round in 0..3 {
        let (code, out) = t.exec("orphans", &["sh", "-c", orphans]).await;
        assert_eq!(code, 0, "round {round} could not fork: {out}");
        let reaped = eventually(Duration::from_secs(20), || async {
            t.zombies("orphans").await == 0
        })
        .await;
        assert!(
            reaped,
            "round {round} left {} zombies",
            t.zombies("orphans").await
        );
    }
    // Double-forked daemons too: `setsid` puts them out of every process group the agent
    // knows.
    let (code, _) = t
        .exec(
            "orphans",
            &[
                "sh",
                "-c",
                "for i in $(seq 10); do setsid sleep 0.1 & done; exit 3",
            ],
        )
        .await;
    assert_eq!(code, 3, "the command's own exit code");
    let reaped = eventually(Duration::from_secs(20), || async {
        t.zombies("orphans").await == 0
    })
    .await;
    assert!(reaped, "{} zombies left", t.zombies("orphans").await);
    assert_eq!(t.ask("orphans", "still here").await, "still here");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_box_made_without_the_profile_is_made_again_with_it() {
    use clawpen::config::SeccompChoice;
    // A box made by a bridge without the profile (as an older clawpen made them).
    let t = TestBridge::start(|c| c.limits.seccomp = SeccompChoice::Engine).await;
    assert_eq!(t.ask("upgraded", "hi").await, "hi");
    let (code, _) = t
        .exec("upgraded", &["sh", "-c", "echo kept > /workspace/note"])
        .await;
    assert_eq!(code, 0);
    let old = t.container("upgraded").await;
    let support::TestBridge {
        dir,
        mut config,
        bridge,
        cleanup,
    } = t;
    let sandbox = bridge.router.sandbox().clone();
    bridge.shutdown().await;
    sandbox
        .stop(&old)
        .await
        .unwrap_or_else(|e| panic!("stop: {e}"));

    // The next bridge applies the profile: the box is made again, its workspace kept.
    config.limits.seccomp = SeccompChoice::Clawpen;
    let bridge = clawpen::daemon::Bridge::start(&config, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("restart: {e}"));
    let t = support::TestBridge {
        dir,
        config,
        bridge,
        cleanup,
    };
    assert_eq!(t.ask("upgraded", "again").await, "again");
    let new = t.container("upgraded").await;
    assert_ne!(new, old, "the old box was started as it was");
    let sandbox = t.bridge.router.sandbox().clone();
    let profile = sandbox.seccomp().map(|s| s.security_opt());
    let options = sandbox
        .docker()
        .inspect_container(new.as_str(), None)
        .await
        .ok()
        .and_then(|info| info.host_config)
        .and_then(|h| h.security_opt)
        .unwrap_or_default();
    assert!(profile.is_some_and(|p| options.contains(&p)), "{options:?}");
    let (_, note) = t.exec("upgraded", &["cat", "/workspace/note"]).await;
    assert_eq!(note.trim(), "kept");

    // A box stopped with the profile in force is started again as it is.
    sandbox
        .stop(&new)
        .await
        .unwrap_or_else(|e| panic!("stop: {e}"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.box_running("upgraded").await == Some(false)
        })
        .await
    );
    assert_eq!(t.ask("upgraded", "once more").await, "once more");
    assert_eq!(t.container("upgraded").await, new);
    t.stop().await;
}
