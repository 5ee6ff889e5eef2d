#!/usr/bin/env bash
# Build the bklog image here, run it, and check that it answers /_health and serves the admin's
# stylesheet (static files are collected at build time).
#
# No image can be pulled on these machines, so the base is a stand-in made with debootstrap
# (Debian bookworm minbase + python3, python3-venv, ca-certificates), imported once and kept in
# var/image-build/. Python wheels are built on the host with its pip settings and mounted into
# the build (PIP_FIND_LINKS), so the build needs no index of its own. buildah builds and runs
# with --isolation chroot: no daemon, no nested namespaces (podman's OCI runtime cannot set
# rlimits in this sandbox; on a normal host `podman build`/`docker build` work the same).
#
#   support-files/build-image.sh            build, run, check /_health and /static/, remove the container
#   IMAGE=bklog:1.0 support-files/build-image.sh
#   KEEP_RUNNING=1 ...                      leave the container running (prints its URL)
#
# Needs root (debootstrap, buildah storage). Missing tools are installed with apt-get.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
work="${BKLOG_IMAGE_BUILD_DIR:-$root/var/image-build}"
image="${IMAGE:-localhost/bklog:dev}"
base_image="localhost/bklog-stand-in-base:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
py="${PYTHON:-$root/.venv/bin/python}"
say() { printf 'build-image: %s\n' "$*"; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v buildah >/dev/null || need+=(buildah)
if [[ ${#need[@]} -gt 0 ]]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$work"

# 1. The stand-in base image (cached).
if ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
    tarball="$work/base-bookworm.tar"
    if [[ ! -s "$tarball" ]]; then
        say "debootstrap bookworm (about a minute)"
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
            || { tail -20 "$work/debootstrap.log"; exit 1; }
        rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
        tar -C "$work/rootfs" -cf "$tarball" .
        rm -rf "$work/rootfs"
    fi
    say "importing the stand-in base as $base_image"
    # buildah has no `import`: a scratch container with the tree copied in, committed.
    scratch="$(buildah from scratch)"
    buildah add --quiet "$scratch" "$tarball" / >/dev/null
    buildah commit --quiet --rm "$scratch" "$base_image" >/dev/null
fi

# 2. Wheels for the pinned runtime requirements, built with this host's pip settings. The build
#    installs from them first; a dependency that only the base image's Python needs (markers
#    such as python_full_version differ from this host's) comes from the index, through this
#    host's CA bundle (PIP_CERT), since the build shares this host's network.
wheels="$work/wheels"
stamp="$wheels/.requirements-$(md5sum requirements.txt | cut -c1-12)"
if [[ ! -e "$stamp" ]]; then
    say "building wheels for requirements.txt"
    rm -rf "$wheels" && mkdir -p "$wheels"
    "$py" -m pip wheel --quiet --disable-pip-version-check -r requirements.txt -w "$wheels"
    touch "$stamp"
fi
ca_bundle="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"

# 3. The image, in Docker's format: the OCI format has no HEALTHCHECK (buildah would drop it).
say "building $image with buildah (isolation chroot)"
buildah bud --isolation chroot --format docker -f Dockerfile -t "$image" --build-arg "BASE_IMAGE=$base_image" \
    --build-arg PIP_FIND_LINKS=/wheels --volume "$wheels:/wheels:ro" \
    --build-arg PIP_CERT=/run/host-ca.crt --volume "$ca_bundle:/run/host-ca.crt:ro" .
healthcheck="$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck}}' "$image")"
if [[ "$healthcheck" != *_health* ]]; then
    say "the built image has no HEALTHCHECK (got: $healthcheck)" >&2
    exit 1
fi
say "the image keeps its HEALTHCHECK: $healthcheck"

# 4. Run it and ask /_health. A container's network is the host's here (no network namespaces
#    to spare), so the web role listens on a free loopback port.
port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
name="bklog-image-check-$$"
log="$work/container.log"
say "running $image (role web) on 127.0.0.1:$port"
container="$(buildah from --quiet --name "$name" "$image")"
# buildah run applies the image's USER, WORKDIR and ENV; the entrypoint is given explicitly.
buildah run --isolation chroot --network host --env HOST=127.0.0.1 --env "PORT=$port" "$container" \
    /app/support-files/docker-entrypoint.sh web >"$log" 2>&1 &
runner=$!
stop() {
    pkill -TERM -P "$runner" 2>/dev/null || true
    kill "$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
    buildah rm "$container" >/dev/null 2>&1 || true
}
[[ -n "${KEEP_RUNNING:-}" ]] || trap stop EXIT

url="http://127.0.0.1:$port"
healthy=""
for _ in $(seq 1 150); do
    if body="$(curl -fsS --noproxy '*' "$url/_health" 2>/dev/null)"; then
        healthy=1
        say "the container answers /_health: $body"
        break
    fi
    sleep 0.2
done
if [[ -z "$healthy" ]]; then
    stop; trap - EXIT
    say "the container did not answer /_health within 30 s; its log:" >&2
    tail -40 "$log" >&2
    exit 1
fi

# 5. Static files: the admin's stylesheet by its plain name and by the hashed name the login page
#    links (from the manifest collectstatic wrote at build time), each as CSS.
static_ok() {  # path
    local type
    type="$(curl -fsS --noproxy '*' -o /dev/null -w '%{content_type}' "$url$1" 2>/dev/null)" || return 1
    [[ "$type" == text/css* ]] || return 1
    say "the container serves $1 ($type)"
}
hashed="$(curl -fsS --noproxy '*' "$url/admin/login/" | grep -o '/static/admin/css/base\.[0-9a-f]*\.css' | head -1 || true)"
if [[ -z "$hashed" ]] || ! static_ok /static/admin/css/base.css || ! static_ok "$hashed"; then
    say "the container does not serve the admin's stylesheet (login page links: ${hashed:-nothing}); its log:" >&2
    tail -40 "$log" >&2
    exit 1
fi
[[ -n "${KEEP_RUNNING:-}" ]] && say "left running as $name: $url"
exit 0
