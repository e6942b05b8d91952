//! The bridge's own image: `docker/bridge/Dockerfile` over a context of the static bridge,
//! the static agent, busybox and a tiny root tree, built FROM scratch by the engine's legacy
//! builder, so no registry is needed (as for the box image).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cargo::Workspace;
use crate::{Failure, Step};

/// The bridge's user and group inside the image (no name clash with a host user matters:
/// only the number is used).
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      clawpen:x:10001:10001:clawpen:/var/lib/clawpen:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nclawpen:x:10001:\n";

fn io(what: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(format!("{}: {e}", what.display()))
}

/// Copies `from` into `dir` as `name`, executable.
fn put_binary(from: &Path, dir: &Path, name: &str) -> Step {
    let to = dir.join(name);
    std::fs::copy(from, &to).map_err(io(from))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).map_err(io(&to))
}

/// Assembles the context in the target directory and builds `tag` from it.
pub fn bridge(ws: &Workspace, tag: &str, bridge: &Path, agent: &Path, busybox: &Path) -> Step {
    let context = ws.target.join("bridge-image");
    if context.exists() {
        std::fs::remove_dir_all(&context).map_err(io(&context))?;
    }
    for dir in ["rootfs/etc", "rootfs/tmp", "data"] {
        let dir = context.join(dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    let tmp = context.join("rootfs/tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).map_err(io(&tmp))?;
    let dockerfile = ws.root.join("docker/bridge/Dockerfile");
    std::fs::copy(&dockerfile, context.join("Dockerfile")).map_err(io(&dockerfile))?;
    std::fs::write(context.join("rootfs/etc/passwd"), PASSWD).map_err(io(&context))?;
    std::fs::write(context.join("rootfs/etc/group"), GROUP).map_err(io(&context))?;
    put_binary(bridge, &context, "clawpen")?;
    put_binary(agent, &context, "clawpen-agent")?;
    put_binary(busybox, &context, "busybox")?;
    let Some(context) = context.to_str() else {
        return Err(Failure::new("the target directory's path is not UTF-8"));
    };
    // The legacy builder, as `clawpen image build` uses: it needs nothing but the engine
    // (no buildx plugin, no frontend image).
    ws.command(
        "docker",
        &["build", "--tag", tag, context],
        &[("DOCKER_BUILDKIT", "0")],
    )?;
    eprintln!("built {tag}");
    Ok(())
}
