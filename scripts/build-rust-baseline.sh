#!/usr/bin/env bash
# Builds native-bench/rust-baseline (the Rust comparison server) from Debian's packaged crates:
# crates.io is not reachable, so the crate sources come from `librust-*-dev` packages and
# native-bench/rust-baseline/.cargo/config.toml points cargo at /usr/share/cargo/registry.
# It also installs wrk, the second load generator of npm run bench:compare / bench:sweep.
# Idempotent: apt runs only for missing packages, cargo rebuilds only what changed.
# Prints the binary's path (relative to the repository root) as its last line.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
crate_dir="$repo_root/native-bench/rust-baseline"

# Each package brings the crate and, as Debian provides them, all its optional features.
packages=(
  librust-base64-dev
  librust-dashmap-dev
  librust-getrandom-dev
  librust-hyper-dev
  librust-postgres-types-dev
  librust-serde-dev
  librust-serde-derive-dev
  librust-serde-json-dev
  librust-sha2-dev
  librust-tokio-dev
  librust-tokio-postgres-dev
  librust-uuid-dev
  wrk
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if ((${#missing[@]} > 0)); then
  echo "rust-baseline: installing ${missing[*]}" >&2
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
  elif [[ -x /root/.cargo/bin/cargo ]]; then
    PATH="/root/.cargo/bin:$PATH"
  else
    echo "rust-baseline: cargo not found on PATH nor in ~/.cargo/bin (needs Rust >= 1.78: Debian bookworm's own cargo is too old)" >&2
    exit 1
  fi
fi

# --locked: build exactly the committed Cargo.lock (it records the Debian crate versions).
(cd "$crate_dir" && cargo build --release --offline --locked >&2)

echo "native-bench/rust-baseline/target/release/rust-baseline"
