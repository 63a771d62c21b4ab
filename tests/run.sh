#!/usr/bin/env bash
# The one command that runs every corekv test on a fresh machine (README, "Run the tests").
# It installs what it needs, checks formatting and lints, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# glommio and io_uring register buffers in locked memory; raise the limit where we may.
ulimit -l unlimited 2>/dev/null || ulimit -l 1048576 2>/dev/null || true

# Debian packages the tests use; none of them is needed to build or run corekv itself.
# etcd-server and etcd-client: the real etcd 3.4 and etcdctl, the reference of the
# compatibility tests; curl: the JSON gateway tests. Installed only when missing, so a
# second run does no set-up.
test_packages=(etcd-server etcd-client curl)
missing=()
for pkg in "${test_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    # etcd-server's package scripts would start an etcd service on 2379/2380 where an
    # init system runs. The tests start their own servers on free ports and never use
    # those; a policy-rc.d that forbids starting services keeps the daemon from running
    # (the standard Debian way; images that already have one keep theirs).
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    if [ "$own_policy" = 1 ]; then
        rm -f "$policy"
        trap - EXIT
    fi
fi
# Belt and braces: an etcd service left running by an earlier install is stopped.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd
    systemctl disable --quiet etcd || true
fi
if command -v service >/dev/null 2>&1 && service etcd status >/dev/null 2>&1; then
    service etcd stop || true
fi

# The etcd compatibility tests skip (loudly) when etcd is not installed; here they must
# run, so a missing etcd fails the run instead.
export COREKV_REQUIRE_ETCD=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
