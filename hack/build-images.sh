#!/usr/bin/env bash
# Builds the project's container images without a registry and saves each as
# an OCI archive in the cache, ready for `ctr images import` (the test node,
# devenv/codex_devenv/images.py) or any other runtime.
#
#   hack/build-images.sh                 all: runner operator gateway redis fake-model
#   IMAGES="runner operator gateway" hack/build-images.sh
#   IMAGES="redis fake-model" hack/build-images.sh
#
# NAME's Dockerfile is NAME/Dockerfile (the product: runner, operator,
# gateway) or images/NAME/Dockerfile (redis, the stand-in for the chart's
# default docker.io/library/redis where no registry is reachable, and
# fake-model, the scripted fake model API for in-cluster tests and
# `make e2e-kind`). A Dockerfile line "# base: FLAVOR" picks its base
# rootfs (BASE_FLAVORS; default python).
#
# stdout: one line per image, "NAME<TAB>ARCHIVE" (e.g. "runner\t/root/.cache/
# codex-k8s-operator/images/codex-runner-0.1.0.oci.tar"); progress and the
# time of every step go to stderr.
#
# Steps, each skipped when its inputs did not change (content-keyed):
#   a. base: a debootstrap bookworm --variant=minbase rootfs plus the packages of its flavor (BASE_FLAVORS)
#      (+ bookworm-updates/-security), tarred into the cache (keyed by suite,
#      architecture, package list and this recipe's version), then
#      `podman import`ed as localhost/codex-base:bookworm (labelled with the
#      key; re-imported only when the key differs).
#   b. context: build/image-context/codex (hack/install-codex.sh) and
#      build/image-context/wheels, a wheelhouse of the project's dependencies
#      built on the host (image builds run with --network=none: there is no
#      registry and the base has no proxy CA, so nothing is fetched inside).
#   c. build: `podman --runtime runc build --build-arg BASE=... -f X/Dockerfile
#      -t localhost/codex-X:VERSION .`, keyed by the Dockerfile, every file its
#      COPY lines send, the base image id and the version.
#   d. save: `podman save --format oci-archive` into the cache (the key is
#      kept beside it in ARCHIVE.key).
#
# Needs root (debootstrap, podman's storage); installs podman and debootstrap
# from Debian's packages when missing. crun fails on cgroup v1 hybrid hosts,
# so runc is used; the default rlimits fail too, hence --ulimit.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

RECIPE=1 # bump to invalidate every cached base rootfs
SUITE=bookworm
# Base rootfs flavors: the Debian packages debootstrap installs into each.
declare -A BASE_FLAVORS=(
  [python]="python3 python3-venv ca-certificates passwd"
  [redis]="redis-server passwd"
)
base_image_of() { # flavor -> the local image name of its base
  if [[ $1 == python ]]; then echo "localhost/codex-base:$SUITE"; else echo "localhost/codex-base-$1:$SUITE"; fi
}
BASE_IMAGE=$(base_image_of python)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
IMAGES=${IMAGES:-runner operator gateway redis fake-model}
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
KEY_LABEL=dev.codex.build-key

cache_root=${CODEX_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-k8s-operator}
img_dir="$cache_root/images"
ctx="$repo/build/image-context"

log() { echo "[images] $*" >&2; }
die() { log "$*"; exit 1; }
sha() { sha256sum | cut -c1-24; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }
summary=()
step_done() { # name start-time what-happened
  local t; t=$(elapsed "$2")
  log "$1: $3 in $t"
  summary+=("$(printf '%-18s %-8s %s' "$1" "$t" "$3")")
}

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and podman's system storage)"
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p;T;q' pyproject.toml)
version=${version:-0.1.0}

t_all=$EPOCHREALTIME
mkdir -p "$img_dir" "$ctx"
# One build at a time per cache (pytest workers, make images in another shell).
exec 9>"$img_dir/.lock"
flock 9

# -- tools ----------------------------------------------------------------------------
t0=$EPOCHREALTIME
absent=()
command -v podman >/dev/null || absent+=(podman)
command -v debootstrap >/dev/null || absent+=(debootstrap)
command -v runc >/dev/null || absent+=(runc)
if [[ ${#absent[@]} -gt 0 ]]; then
  log "installing ${absent[*]} from Debian's packages"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${absent[@]}" >&2
  step_done tools "$t0" "installed ${absent[*]}"
fi

# -- a. base --------------------------------------------------------------------------
arch=$(dpkg --print-architecture)

dockerfile_of() { # image name -> its Dockerfile
  if [[ -f "$1/Dockerfile" ]]; then echo "$1/Dockerfile"; else echo "images/$1/Dockerfile"; fi
}
flavor_of() { # Dockerfile -> its base flavor ("# base: FLAVOR", default python)
  local f
  f=$(sed -n 's/^# base: *\([a-z0-9-]*\).*/\1/p' "$1" | head -n1)
  echo "${f:-python}"
}

unmount_under() { # dir: unmount whatever debootstrap or chroot left mounted below it
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(findmnt -rno TARGET | grep -F "$1/" | sort -r)
}

build_rootfs() { # rootfs-tar packages...
  local out=$1 root
  shift
  root=$(mktemp -d "$img_dir/.rootfs.XXXXXX")
  [[ -n "$root" && -d "$root" ]] || die "no temporary rootfs directory"
  # shellcheck disable=SC2064
  trap "unmount_under '$root'; rm -rf --one-file-system '$root' '$out.tmp'" EXIT
  log "debootstrap $SUITE minbase + $* from $MIRROR"
  debootstrap --variant=minbase --components=main --include="$(IFS=,; echo "$*")" \
    "$SUITE" "$root" "$MIRROR" >"$img_dir/debootstrap.log" 2>&1 \
    || { tail -n 30 "$img_dir/debootstrap.log" >&2; die "debootstrap failed (log: $img_dir/debootstrap.log)"; }
  cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  # Point releases and security fixes published since the release.
  mount -t proc proc "$root/proc"
  if ! chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c 'apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade' >>"$img_dir/debootstrap.log" 2>&1; then
    tail -n 30 "$img_dir/debootstrap.log" >&2
    die "apt-get upgrade in the rootfs failed"
  fi
  if [[ -x "$root/usr/bin/python3" ]]; then
    chroot "$root" /usr/bin/python3 -c 'import platform; print(platform.python_version())' >"$out.python"
  fi
  umount "$root/proc"
  unmount_under "$root"
  # Slim down: package caches and lists, docs (copyright files stay), man pages,
  # locales, logs; no setuid/setgid bits (pods run with no_new_privs anyway).
  rm -rf "${root:?}"/var/cache/apt/* "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/cache/debconf/*-old \
    "${root:?}"/usr/share/man/* "${root:?}"/usr/share/info/* "${root:?}"/usr/share/locale/* \
    "${root:?}"/var/log/* "${root:?}"/tmp/* "${root:?}"/var/tmp/* "${root:?}"/dev/* "${root:?}"/run/*
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
  : >"$root/etc/machine-id"
  rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf --one-file-system "$root"
  trap - EXIT
}

declare -A base_ids=()
rootfs_tar=""
ensure_base() { # flavor: the base rootfs and image of that flavor (cached); sets base_ids[flavor]
  local flavor=$1 packages key tar image have what t0
  [[ -n "${base_ids[$flavor]:-}" ]] && return 0
  packages=${BASE_FLAVORS[$flavor]:-}
  [[ -n "$packages" ]] || die "unknown base flavor '$flavor' (known: ${!BASE_FLAVORS[*]})"
  # shellcheck disable=SC2086
  key=$(printf '%s\n' "recipe=$RECIPE" "$SUITE" minbase "$arch" $packages | sha)
  # The python flavor keeps its first name (no flavor in it), so caches stay valid.
  if [[ $flavor == python ]]; then tar="$img_dir/rootfs-$SUITE-minbase-$arch-$key.tar"
  else tar="$img_dir/rootfs-$flavor-$SUITE-minbase-$arch-$key.tar"; fi
  image=$(base_image_of "$flavor")

  t0=$EPOCHREALTIME
  if [[ -f "$tar" ]]; then
    what="cached $(basename "$tar")"
  else
    # shellcheck disable=SC2086
    build_rootfs "$tar" $packages
    what="debootstrapped $(basename "$tar") ($(du -m "$tar" | cut -f1) MB)"
  fi
  step_done "base rootfs $flavor" "$t0" "$what"

  t0=$EPOCHREALTIME
  have=$("${PODMAN[@]}" image inspect --format "{{index .Labels \"$KEY_LABEL\"}}" "$image" 2>/dev/null || true)
  if [[ "$have" == "$key" ]]; then
    what="unchanged"
  else
    "${PODMAN[@]}" import --quiet \
      --change "LABEL $KEY_LABEL=$key" \
      --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change 'CMD ["/bin/bash"]' \
      "$tar" "$image" >/dev/null
    what="imported"
  fi
  base_ids[$flavor]=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$image")
  step_done "base image $flavor" "$t0" "$what $image ${base_ids[$flavor]:0:12}"
  if [[ $flavor == python ]]; then rootfs_tar=$tar; fi
}

# The python base always: the build context (wheels) is made for its Python.
ensure_base python
for name in $IMAGES; do
  dockerfile=$(dockerfile_of "$name")
  [[ -f "$dockerfile" ]] || die "no $name/Dockerfile or images/$name/Dockerfile"
  ensure_base "$(flavor_of "$dockerfile")"
done

# -- b. build context ------------------------------------------------------------------
t0=$EPOCHREALTIME
codex_bin=$(bash hack/install-codex.sh)
# A hard link when the cache is on the same filesystem: no 300 MB copy.
if ! [[ "$ctx/codex" -ef "$codex_bin" ]]; then
  rm -f "$ctx/codex"
  ln "$codex_bin" "$ctx/codex" 2>/dev/null || cp --preserve=mode,timestamps "$codex_bin" "$ctx/codex"
  what="linked $codex_bin"
else
  what="unchanged"
fi
step_done "context codex" "$t0" "$what"

# The dependencies of pyproject.toml (pinned to the versions in the dev venv
# when there is one, so the images run what the tests ran) plus the build
# backend, as wheels for the image's own Python. Environment markers are
# evaluated for that exact version (bookworm's 3.11.2 needs async-timeout for
# redis, 3.11.3+ does not): pip runs against a host interpreter of that
# version, or else inside the base image with the host's network and CAs.
t0=$EPOCHREALTIME
py=python3
[[ -x "$repo/.venv/bin/python" ]] && py="$repo/.venv/bin/python"
if [[ ! -s "$rootfs_tar.python" ]]; then
  "${PODMAN[@]}" run --rm --network=none "${ULIMITS[@]}" "$BASE_IMAGE" \
    python3 -c 'import platform; print(platform.python_version())' >"$rootfs_tar.python"
fi
image_python=$(cat "$rootfs_tar.python")
requirements=$("$py" - <<'EOF'
import tomllib
doc = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join([*doc["build-system"]["requires"], *doc["project"]["dependencies"]]))
EOF
)
constraints=""
[[ "$py" == "$repo/.venv/bin/python" ]] \
  && constraints=$("$py" -m pip freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9._-]+==' | grep -viE '^codex-k8s-operator==' || true)
wheels_key=$(printf '%s\n' "$requirements" "--" "$constraints" "--" "$arch" "python=$image_python" | sha)
wheel_cache="$img_dir/wheels/$wheels_key"
if [[ ! -f "$wheel_cache/.complete" ]]; then
  rm -rf "$wheel_cache" "$wheel_cache.tmp"
  mkdir -p "$wheel_cache.tmp"
  printf '%s\n' "$requirements" >"$wheel_cache.tmp/requirements.txt"
  printf '%s\n' "$constraints" >"$wheel_cache.tmp/constraints.txt"
  host_python=""
  for cand in /usr/bin/python3 "$py"; do
    if [[ -x "$cand" && "$("$cand" -c 'import platform; print(platform.python_version())')" == "$image_python" ]]; then
      host_python=$cand; break
    fi
  done
  if [[ -n "$host_python" ]]; then
    "$py" -m pip --python "$host_python" wheel -q --wheel-dir "$wheel_cache.tmp" \
      -r "$wheel_cache.tmp/requirements.txt" -c "$wheel_cache.tmp/constraints.txt" >&2
    how="host $host_python"
  else
    ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    "${PODMAN[@]}" run --rm --network=host "${ULIMITS[@]}" -v "$wheel_cache.tmp:/out" \
      -v "$ca:/etc/ssl/certs/host-ca.crt:ro" -e PIP_CERT=/etc/ssl/certs/host-ca.crt \
      -e PIP_DISABLE_PIP_VERSION_CHECK=1 ${PIP_INDEX_URL:+-e PIP_INDEX_URL="$PIP_INDEX_URL"} "$BASE_IMAGE" \
      sh -c 'python3 -m venv /tmp/v && /tmp/v/bin/pip wheel -q --wheel-dir /out -r /out/requirements.txt -c /out/constraints.txt' >&2
    how="in $BASE_IMAGE"
  fi
  touch "$wheel_cache.tmp/.complete"
  mv -T "$wheel_cache.tmp" "$wheel_cache"
  what="built $(find "$wheel_cache" -name '*.whl' | wc -l) wheels for Python $image_python ($how)"
else
  what="cached"
fi
if [[ "$(cat "$ctx/wheels/.key" 2>/dev/null)" != "$wheels_key" ]]; then
  rm -rf "$ctx/wheels"
  cp -al "$wheel_cache" "$ctx/wheels" 2>/dev/null || cp -a "$wheel_cache" "$ctx/wheels"
  echo "$wheels_key" >"$ctx/wheels/.key"
  what="$what, copied to build/image-context/wheels"
fi
step_done "context wheels" "$t0" "$what ($wheels_key)"

# -- c/d. build and save each image ------------------------------------------------------
copy_sources() { # Dockerfile -> the context paths its COPY lines send (not COPY --from)
  awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$1"
}

tree_digest() { # paths -> digest of what the build context sends from them
  local p
  for p in "$@"; do
    [[ -e "$p" ]] || die "COPY source $p does not exist"
    if [[ "$p" == build/image-context* ]]; then
      # Large and produced by the steps above: name, size and mtime stand for content.
      find "$p" -printf '%p %s %T@\n' | sort
    else
      find "$p" \( -name __pycache__ -o -name '*.egg-info' -o -name .mypy_cache -o -name .pytest_cache \
        -o -name .ruff_cache \) -prune -o \( -type f -o -type l \) ! -name '*.pyc' -print0 \
        | sort -z | xargs -0 -r sha256sum
    fi
  done | sha
}

for name in $IMAGES; do
  dockerfile=$(dockerfile_of "$name")
  flavor=$(flavor_of "$dockerfile")
  base_id=${base_ids[$flavor]}
  base_image=$(base_image_of "$flavor")
  image="localhost/codex-$name:$version"
  archive="$img_dir/codex-$name-$version.oci.tar"

  t0=$EPOCHREALTIME
  mapfile -t sources < <(copy_sources "$dockerfile")
  key=$( {
    echo "image=$image base=$base_id"
    sha256sum "$dockerfile" .containerignore
    tree_digest "${sources[@]}"
  } | sha)
  step_done "key $name" "$t0" "$key"

  if [[ -f "$archive" && "$(cat "$archive.key" 2>/dev/null)" == "$key" ]]; then
    summary+=("$(printf '%-18s %-8s %s' "build $name" "0.0s" "unchanged")")
    summary+=("$(printf '%-18s %-8s %s' "save $name" "0.0s" "unchanged $archive")")
    printf '%s\t%s\n' "$name" "$archive"
    continue
  fi

  t0=$EPOCHREALTIME
  have_key=$("${PODMAN[@]}" image inspect --format "{{index .Labels \"$KEY_LABEL\"}}" "$image" 2>/dev/null || true)
  if [[ "$have_key" == "$key" ]]; then
    what="unchanged $image"
  else
    log "building $image from $dockerfile"
    old_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    "${PODMAN[@]}" build --quiet --pull=never --layers=false --network=none "${ULIMITS[@]}" \
      --build-arg "BASE=$base_image" --label "$KEY_LABEL=$key" \
      -f "$dockerfile" -t "$image" . >&2 \
      || die "podman build of $image failed"
    # The previous build of this tag is now untagged: drop it. (--layers=false: no
    # intermediate images pile up; a changed COPY reruns its stage anyway.)
    if [[ -n "$old_id" && "$old_id" != "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$image")" ]]; then
      "${PODMAN[@]}" rmi "$old_id" >/dev/null 2>&1 || true
    fi
    what="built $image"
  fi
  step_done "build $name" "$t0" "$what"

  t0=$EPOCHREALTIME
  rm -f "$archive.tmp"
  "${PODMAN[@]}" save --quiet --format oci-archive -o "$archive.tmp" "$image"
  mv "$archive.tmp" "$archive"
  echo "$key" >"$archive.key"
  step_done "save $name" "$t0" "$archive ($(du -m "$archive" | cut -f1) MB)"
  printf '%s\t%s\n' "$name" "$archive"
done

log "timings:"
printf '[images]   %s\n' "${summary[@]}" >&2
log "total $(elapsed "$t_all")"
