//! `cargo xtask`: clawpen's build steps, the one place that knows how the pieces are made.
//!
//! The box image is built offline from a static `clawpen-agent` and a static busybox, so
//! before anything runs those two must exist; this program finds or makes them, builds the
//! bridge and the image, and then either chats or runs the whole test suite:
//!
//! ```text
//! cargo xtask chat [ARGS]   busybox, static agent, bridge (release), box image, `clawpen chat ARGS`
//! cargo xtask test [ARGS]   busybox, static agent, fmt, clippy, box image, `cargo test --workspace ARGS`
//! cargo xtask setup         busybox, static agent, bridge (release), box image: everything but chat
//! cargo xtask agent         the static agent only
//! cargo xtask busybox       a static busybox only (prints where it is)
//! cargo xtask bridge-image  the bridge's own image (docker/bridge/), FROM scratch, no registry
//! ```
//!
//! `.ci/run` calls `cargo xtask test`, and `clawpen doctor` names these commands when a
//! piece is missing. Only std is used: this is the first thing built on a fresh machine.
//!
//! # Layout
//! - `main`: the commands, as sequences of steps.
//! - [`busybox`]: finding a static busybox, or getting one from Debian's packages.
//! - [`cargo`]: running cargo and the built binaries, the target directory, static builds.
//! - [`image`]: the bridge's image context, built with `docker build`.

use std::path::PathBuf;
use std::process::ExitCode;

mod busybox;
mod cargo;
mod image;

use cargo::Workspace;

/// A step failed; the message says what to do about it.
#[derive(Debug)]
pub struct Failure(String);

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What every step returns.
type Step<T = ()> = Result<T, Failure>;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

  chat [ARGS]   build everything (busybox, static agent, bridge, box image), then `clawpen chat ARGS`
  test [ARGS]   build the prerequisites, check fmt and clippy, build the box image, then
                `cargo test --workspace ARGS`
  setup         build everything `chat` needs, without chatting
  agent         build the static clawpen-agent
  busybox       find or fetch a static busybox and print its path
  bridge-image [TAG]
                build the bridge's image from the static bridge, agent and busybox
                (default tag clawpen:<version>)
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = Workspace::locate().and_then(|mut ws| match command.as_str() {
        "chat" => chat(&mut ws, &rest),
        "test" => test(&mut ws, &rest),
        "setup" => setup(&mut ws).map(|_| ()),
        "agent" => ws.static_agent().map(|path| println!("{}", path.display())),
        "busybox" => busybox::ensure(&ws.target).map(|path| println!("{}", path.display())),
        "bridge-image" => bridge_image(&mut ws, rest.first().map(String::as_str)),
        "" | "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Failure::new(format!(
            "unknown command `{other}`\n\n{USAGE}"
        ))),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A heading for the step that starts, as `.ci/run` prints them.
fn heading(what: &str) {
    eprintln!("\n== {what}");
}

/// Busybox and the static agent, then the release bridge and the box image; returns the
/// bridge binary.
fn setup(ws: &mut Workspace) -> Step<PathBuf> {
    heading("busybox-static");
    let busybox = busybox::ensure(&ws.target)?;
    ws.offer_busybox(&busybox);
    heading("static clawpen-agent");
    ws.static_agent()?;
    heading("bridge (release)");
    let bridge = ws.bridge(true)?;
    heading("box image");
    ws.image(&bridge, None)?;
    Ok(bridge)
}

/// `cargo xtask bridge-image`: the bridge's image, made like the box image: a context of
/// static binaries and a tiny root tree, built by the engine's legacy builder FROM scratch.
fn bridge_image(ws: &mut Workspace, tag: Option<&str>) -> Step {
    heading("busybox-static");
    let busybox = busybox::ensure(&ws.target)?;
    heading("static clawpen-agent");
    let agent = ws.static_agent()?;
    heading("static bridge");
    let bridge = ws.static_bridge()?;
    heading("bridge image");
    let tag = tag.map_or_else(
        || format!("clawpen:{}", env!("CARGO_PKG_VERSION")),
        str::to_string,
    );
    image::bridge(ws, &tag, &bridge, &agent, &busybox)
}

/// `cargo xtask chat`: everything, then the terminal chat in this process's place.
fn chat(ws: &mut Workspace, args: &[String]) -> Step {
    let bridge = setup(ws)?;
    heading("clawpen chat");
    ws.exec(&bridge, "chat", args)
}

/// `cargo xtask test`: what CI runs. Formatting and lints come before the long test run so
/// that a style slip fails in seconds.
fn test(ws: &mut Workspace, args: &[String]) -> Step {
    heading("busybox-static");
    let busybox = busybox::ensure(&ws.target)?;
    ws.offer_busybox(&busybox);
    heading("static clawpen-agent");
    ws.static_agent()?;
    heading("format and lints");
    ws.cargo(&["fmt", "--all", "--check"], &[])?;
    ws.cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    heading("box image");
    let bridge = ws.bridge(false)?;
    // A throw-away data directory: building the image needs no store of its own.
    let data = std::env::temp_dir().join(format!("clawpen-xtask-{}", std::process::id()));
    let built = ws.image(&bridge, Some(&data));
    let _ = std::fs::remove_dir_all(&data);
    built?;
    heading("tests");
    let mut test = vec!["test", "--workspace"];
    test.extend(args.iter().map(String::as_str));
    ws.cargo(&test, &[])
}
