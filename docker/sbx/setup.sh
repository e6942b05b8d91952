#!/usr/bin/env bash
# Run inside the sandbox (`sbx env exec clawpen -- bash clawpen/docker/sbx/setup.sh`): builds
# the static agent, busybox, the bridge and the box image on the sandbox's own engine, then
# checks everything clawpen needs. Needs the policy of the README's steps (crates.io and
# Debian's mirrors for the build; the model provider and chat platforms to run).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v cargo >/dev/null 2>&1; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
sudo mkdir -p /var/lib/clawpen && sudo chown "$(id -u)" /var/lib/clawpen
cargo xtask setup
./target/release/clawpen doctor
echo "ready: ./target/release/clawpen run"
