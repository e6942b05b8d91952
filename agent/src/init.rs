//! The box's PID 1: a minimal init that starts the agent as its only child, reaps every
//! process that ends up orphaned in the box, and passes stop signals on to the agent.
//!
//! Why a separate process rather than reaping inside the agent: a process whose children
//! are reparented to it must `waitpid` them, but the agent's own children (shell commands,
//! the harness) are waited for by tokio, by pid. A blanket `waitpid(-1)` in the agent would
//! steal their exit statuses, and reaping only "someone else's" zombies needs a registry of
//! tokio's children that every spawn must keep exact. Here PID 1 has exactly one child of
//! its own, the agent, so `waitpid(-1)` can take nobody's status by mistake: every other
//! process it reaps is an orphan (a double-forked daemon, what is left of a fork bomb), and
//! the agent's children stay the agent's. This is what tini and dumb-init do.
//!
//! The cost is one small process per box: the same binary, so its code pages are shared
//! with the agent's, and about 150 KiB of memory of its own.

use std::process::ExitCode;

use rustix::process::{Pid, Signal, WaitOptions};
use tokio::signal::unix::{signal, SignalKind};

/// Whether this process is the box's init: PID 1 of its pid namespace. The agent it starts
/// is not, so the same binary serves as both.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Run as the box's init until the agent ends; the exit code is the agent's (128 plus the
/// signal when a signal ended it, as a shell reports it).
pub fn run() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("clawpen-agent init: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(supervise()) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("clawpen-agent init: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn supervise() -> std::io::Result<u8> {
    // Listening before the agent starts, so that an agent that ends at once is not missed.
    let mut child = signal(SignalKind::child())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let exe = std::env::current_exe()?;
    // Stdin, stdout and stderr are inherited: the protocol is between the bridge and the
    // agent; this process never reads or writes them.
    let agent = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .spawn()?;
    let agent = i32::try_from(agent.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the agent has no pid"))?;
    loop {
        if let Some(code) = reap(agent) {
            return Ok(code);
        }
        tokio::select! {
            _ = child.recv() => {}
            _ = terminate.recv() => pass_on(agent, Signal::TERM),
            _ = interrupt.recv() => pass_on(agent, Signal::INT),
        }
    }
}

/// Reap every child that has ended; the agent's exit code once the agent is among them.
/// Signals coalesce, so one SIGCHLD may stand for many ended children: wait until none is
/// left to reap.
fn reap(agent: Pid) -> Option<u8> {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) if pid == agent => {
                let code = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => code,
                    (None, Some(signal)) => 128 + signal,
                    (None, None) => 1,
                };
                return Some(u8::try_from(code & 0xff).unwrap_or(1));
            }
            Ok(Some(_)) => {}
            // Nothing has ended yet (`None`), or no child is left (ECHILD, which cannot
            // happen while the agent runs).
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Pass a stop signal on to the agent, which finishes its writes and exits.
fn pass_on(agent: Pid, signal: Signal) {
    // The agent may have just ended; its SIGCHLD ends the loop then.
    let _ = rustix::process::kill_process(agent, signal);
}
