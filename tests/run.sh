#!/usr/bin/env bash
# The one command that runs every corekv test on a fresh machine (README, "Run the tests").
# It installs what it needs, checks formatting and lints, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# glommio and io_uring register buffers in locked memory; raise the limit where we may.
ulimit -l unlimited 2>/dev/null || ulimit -l 1048576 2>/dev/null || true

# Debian packages the tests use; none of them is needed to build or run corekv itself.
# Installed only when missing, so a second run does no set-up.
test_packages=()
missing=()
for pkg in "${test_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
