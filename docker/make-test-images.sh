#!/usr/bin/env bash
# Makes the base images the Docker tests build on, without a registry:
#
#   pminit-test/builder  Debian trixie (rustc/cargo 1.85, gcc, libc6-dev) by
#                        debootstrap from the Debian mirror: the BUILDER of
#                        docker/Dockerfile.
#   pminit-test/node     FROM-scratch root holding this machine's `node` and
#                        the libraries `ldd` lists, /etc/passwd with node
#                        (1000) and /tmp: the NODE_IMAGE of docker/example.
#
# Then builds the project's real Dockerfiles with them:
#
#   pminit:test          docker/Dockerfile  (BUILDER=pminit-test/builder)
#   pminit-example:test  docker/example     (NODE_IMAGE=pminit-test/node,
#                                            PMINIT_IMAGE=pminit:test)
#
# A base image that exists is kept; the two project images are rebuilt when
# their sources changed (a hash in a label). --rebuild makes them all again.
# Needs root, a running dockerd, debootstrap, and network to the Debian
# mirror and crates.io.
#
# --podman also copies the two project images into podman's store
# (`docker save | podman load`: the same image, same id, for the podman
# run of tests/docker.rs), unless podman already has that id.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_BUILDKIT=0

rebuild=0
podman=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    --podman) podman=1 ;;
    *) echo "usage: $0 [--rebuild] [--podman]" >&2; exit 2 ;;
  esac
done
have() { [ "$rebuild" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! have pminit-test/builder; then
  echo "== pminit-test/builder: debootstrap trixie" >&2
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  debootstrap --variant=minbase --include=rustc,cargo,gcc,libc6-dev,ca-certificates \
    trixie "$work/builder" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # This machine's trust store: crates.io may be reached through a proxy
  # whose certificate authority only the host knows.
  cp /etc/ssl/certs/ca-certificates.crt "$work/builder/etc/ssl/certs/ca-certificates.crt"
  tar -C "$work/builder" -c . | docker import - pminit-test/builder >/dev/null
fi

if ! have pminit-test/node; then
  echo "== pminit-test/node: this machine's node and its libraries" >&2
  root="$work/node"
  node=$(readlink -f "$(command -v node)")
  mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$node" "$root/usr/local/bin/node"
  # Every library ldd names, at the same path (the loader included).
  for lib in $(ldd "$node" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnode:x:1000:1000::/home/node:/sbin/nologin\nnobody:x:65534:65534::/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - pminit-test/node >/dev/null
fi

# Up to date: exists and was built from sources with this hash.
current() {
  have "$1" && [ "$(docker image inspect -f '{{index .Config.Labels "pminit.source"}}' "$1")" = "$2" ]
}
src=$(find Cargo.toml Cargo.lock build.rs docker/Dockerfile scripts src -type f | sort | xargs cat | sha256sum | cut -c1-16)
example=$(cat docker/example/* | sha256sum | cut -c1-8)-$src

if ! current pminit:test "$src"; then
  echo "== pminit:test: docker/Dockerfile" >&2
  docker build -q --network host --build-arg BUILDER=pminit-test/builder \
    --label "pminit.source=$src" -f docker/Dockerfile -t pminit:test . >/dev/null
fi

if ! current pminit-example:test "$example"; then
  echo "== pminit-example:test: docker/example" >&2
  docker build -q --build-arg NODE_IMAGE=pminit-test/node --build-arg PMINIT_IMAGE=pminit:test \
    --label "pminit.source=$example" -t pminit-example:test docker/example >/dev/null
fi

if [ "$podman" = 1 ]; then
  for image in pminit:test pminit-example:test; do
    id=$(docker image inspect -f '{{.Id}}' "$image")
    if [ "$(podman image inspect -f '{{.Id}}' "$image" 2>/dev/null)" != "${id#sha256:}" ]; then
      echo "== $image: docker save | podman load" >&2
      docker save "$image" | podman load -q >/dev/null
    fi
  done
fi
