//! `clawpen gc`: the boxes and workspace volumes of this instance whose conversation the
//! store does not know (orphans), listed, and removed only with `--yes`.
//!
//! The daemon never deletes a workspace on its own: a box it cannot place is only stopped
//! at start. This command is the one way to reclaim them, and it runs with the daemon
//! stopped, because the store (which decides what is known) has one owner.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clawpen_adapters::ConversationKey;

use crate::config::Config;
use crate::control;
use crate::sandbox::{BoxInfo, Sandbox, VolumeInfo};
use crate::store::Store;

/// What `gc` would remove.
#[derive(Debug, Default, PartialEq, Eq)]
struct Orphans {
    boxes: Vec<BoxInfo>,
    volumes: Vec<VolumeInfo>,
}

/// Boxes and volumes whose conversation is not in `known`, or that carry no readable
/// conversation label at all.
fn orphans(
    known: &BTreeSet<ConversationKey>,
    boxes: Vec<BoxInfo>,
    volumes: Vec<VolumeInfo>,
) -> Orphans {
    let stray = |key: &Option<ConversationKey>| key.as_ref().is_none_or(|k| !known.contains(k));
    Orphans {
        boxes: boxes
            .into_iter()
            .filter(|b| stray(&b.conversation))
            .collect(),
        volumes: volumes
            .into_iter()
            .filter(|v| stray(&v.conversation))
            .collect(),
    }
}

fn label(conversation: &Option<ConversationKey>) -> String {
    conversation.as_ref().map_or_else(
        || "(no conversation label)".to_string(),
        ToString::to_string,
    )
}

pub(super) async fn run(config: &Config, yes: bool) -> anyhow::Result<ExitCode> {
    let socket = config.control_socket();
    if control::query_status(&socket).await.is_some() {
        bail!(
            "a clawpen daemon is running (it answers on {}); stop it first: the store decides \
             which conversations are known, and only one process may own it",
            socket.display()
        );
    }
    let store = Store::open(&config.store_dir())?;
    // A store that cannot be read says nothing about what is known: nothing is removed.
    let known = store
        .known_conversations()
        .context("reading the conversations the store knows")?;
    let sandbox = Sandbox::connect(config, &store.instance_id()).await?;
    // A workspace claimed from the warm pool has no conversation label; the store says
    // whose it is, and it is no orphan.
    let claims = store
        .claimed_workspaces()
        .context("reading the workspaces conversations claimed")?;
    let (mut boxes, mut volumes) = (sandbox.list().await?, sandbox.volumes().await?);
    crate::sandbox::attribute(&mut boxes, &mut volumes, &claims);
    let found = orphans(&known, boxes, volumes);
    if found.boxes.is_empty() && found.volumes.is_empty() {
        println!("no orphans: every box and volume belongs to a known conversation");
        return Ok(ExitCode::SUCCESS);
    }
    for b in &found.boxes {
        let state = if b.running { "running" } else { "stopped" };
        println!(
            "box     {:<48} {:<8} {}",
            b.name,
            state,
            label(&b.conversation)
        );
    }
    for v in &found.volumes {
        println!(
            "volume  {:<48} {:<8} {}",
            v.name,
            "",
            label(&v.conversation)
        );
    }
    if !yes {
        println!(
            "{} boxes and {} volumes of conversations the store does not know; \
             `clawpen gc --yes` removes them, and the files in those volumes are lost",
            found.boxes.len(),
            found.volumes.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Containers first: the engine refuses to remove a volume a container still uses.
    for b in &found.boxes {
        sandbox
            .remove_container(&b.id)
            .await
            .with_context(|| format!("removing box {}", b.name))?;
        println!("removed box {}", b.name);
    }
    for v in &found.volumes {
        sandbox
            .remove_volume(&v.name)
            .await
            .with_context(|| format!("removing volume {}", v.name))?;
        println!("removed volume {}", v.name);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(chat: &str) -> ConversationKey {
        ConversationKey::new("telegram", chat)
    }

    fn a_box(name: &str, conversation: Option<ConversationKey>) -> BoxInfo {
        BoxInfo {
            id: format!("id-{name}").into(),
            name: name.into(),
            conversation,
            running: false,
            pool: false,
            workspace: None,
        }
    }

    fn a_volume(name: &str, conversation: Option<ConversationKey>) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            conversation,
            pool: false,
        }
    }

    #[test]
    fn only_unknown_or_unlabelled_boxes_and_volumes_are_orphans() {
        let known: BTreeSet<_> = [key("1")].into_iter().collect();
        let found = orphans(
            &known,
            vec![
                a_box("known", Some(key("1"))),
                a_box("stray", Some(key("2"))),
                a_box("unlabelled", None),
            ],
            vec![
                a_volume("known", Some(key("1"))),
                a_volume("stray", Some(key("2"))),
            ],
        );
        let boxes: Vec<_> = found.boxes.iter().map(|b| b.name.as_str()).collect();
        let volumes: Vec<_> = found.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(boxes, ["stray", "unlabelled"]);
        assert_eq!(volumes, ["stray"]);
        assert_eq!(
            orphans(&known, vec![a_box("known", Some(key("1")))], Vec::new()),
            Orphans::default()
        );
    }
}
