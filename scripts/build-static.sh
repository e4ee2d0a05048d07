#!/usr/bin/env bash
# Builds the static pminit binary and prints its path.
#
# glibc with -C target-feature=+crt-static (the musl target is not available
# on our build machines). Passing --target keeps RUSTFLAGS away from build
# scripts and proc-macros (serde_derive), which must stay
# dynamic. Extra arguments go to cargo build.
#
# -z pack-relative-relocs stores the static-pie's relative relocations as
# RELR (glibc >= 2.36 applies them at start-up; GNU ld >= 2.38 and lld
# write them): 63 KB less than .rela.dyn, and the binary stays a PIE
# (docs/size.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs ${RUSTFLAGS:-}" \
  cargo build --release --locked --target "$target" "$@" >&2
echo "$PWD/target/$target/release/pminit"
