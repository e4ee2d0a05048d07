#!/usr/bin/env bash
# The one command that sets up this machine for every test and runs them:
#
#   sudo scripts/test.sh            # or as root: scripts/test.sh
#   scripts/test.sh --test reload   # extra arguments go to `cargo test`
#
# Installs what the tests need (Debian packages, the Node test apps from
# their lockfile, the Kubernetes schema checker, dumb-init's own test suite
# from Debian's source package), starts dockerd when none runs (no bridge,
# no iptables: containers use --network host or none), then `cargo test`.
# .ci/run calls it with PMINIT_TEST_STRICT=1, which turns every "needs X,
# skipped" into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

echo "== installing test dependencies"
apt-get update -qq
# file: the static-binary test; util-linux: unshare and nsenter (PID-1
# tests); procps: ps; iproute2: ip (tests/sticky.rs's network namespace);
# python3: the worker fixtures; docker.io and podman: the end-to-end suite
# (catatonit: podman's --init, only recommended by podman); debootstrap:
# its builder base image; python3-pytest, -py, -pytest-timeout: dumb-init's
# own suite; prometheus: promtool for tests/metrics.rs.
apt-get install -y -qq file util-linux procps iproute2 python3 docker.io debootstrap \
    podman catatonit python3-pytest python3-py python3-pytest-timeout prometheus >/dev/null
# nodejs/npm are on the machine image (Node 20), from Debian only if missing.
command -v node >/dev/null || apt-get install -y -qq nodejs npm >/dev/null
# The Kubernetes manifest check (tests/k8s.rs).
python3 -m pip install -q kubernetes-validate

echo "== dockerd"
if ! docker info >/dev/null 2>&1; then
  nohup dockerd --bridge=none --iptables=false >/tmp/pminit-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/pminit-dockerd.log; exit 1; }
fi

echo "== npm ci (the Node test apps)"
npm ci --prefix tests/node-app --no-audit --no-fund

echo "== Node 22 and 24 for the Node suites (npm's node package ships the binary)"
for major in 22 24; do
  dir="target/node-$major"
  if ! "$dir/node_modules/node/bin/node" --version 2>/dev/null | grep -q "^v$major\."; then
    npm install --prefix "$dir" --no-audit --no-fund --no-save "node@$major"
  fi
done

echo "== Bun and Deno for tests/runtimes.rs and tests/preload/runtime.test.mjs (pinned; npm's packages ship the binaries)"
BUN_VERSION=1.4.5
DENO_VERSION=2.9.6
if ! target/bun/node_modules/@oven/bun-linux-x64/bin/bun --version 2>/dev/null | grep -qx "$BUN_VERSION"; then
  npm install --prefix target/bun --no-audit --no-fund --no-save "@oven/bun-linux-x64@$BUN_VERSION"
fi
if ! target/deno/node_modules/@deno/linux-x64-glibc/deno --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
  npm install --prefix target/deno --no-audit --no-fund --no-save "@deno/linux-x64-glibc@$DENO_VERSION"
fi

echo "== the preload's own suite (tests/preload) on Node 22 and 24"
# A glob, not the directory: Node 22+ reads `--test DIR` as a file name.
for major in 22 24; do
  "target/node-$major/node_modules/node/bin/node" --test tests/preload/*.test.mjs
done

echo "== next build (tests/node-app/next-app, for tests/frameworks.rs)"
next_app=tests/node-app/next-app
if [ ! -f "$next_app/.next/BUILD_ID" ] ||
   [ -n "$(find "$next_app" -path "$next_app/.next" -prune -o -type f -newer "$next_app/.next/BUILD_ID" -print)" ]; then
  (cd tests/node-app && NEXT_TELEMETRY_DISABLED=1 \
    PATH="$PWD/../../target/node-22/node_modules/node/bin:$PATH" \
    node node_modules/next/dist/bin/next build next-app)
fi

echo "== dumb-init's own test suite (Debian source package)"
scripts/dumb-init-suite.sh fetch

echo "== cargo test"
cargo test --locked --no-fail-fast "$@"
