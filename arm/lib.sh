# arm/lib.sh - shared shell functions for the arm64 (qemu-user) test root. Sourced, never run.
#
# The root lives in arm/.root (git-ignored); the finished root is cached as arm/.cache/root-*.tar.zst and the
# aarch64 wheels in arm/.cache/wheels. Safety rules, learnt the hard way:
#   * the host's /dev is NEVER bind-mounted: the root gets its own tmpfs /dev with a few mknod'ed nodes, so
#     deleting the root can never delete host device entries;
#   * every mount made here is unmounted by arm_umount_all (deepest first), which traps call on exit;
#   * arm_remove_root refuses to delete anything while findmnt shows a mount at or under the root.

ARM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_DIR="$(cd "$ARM_DIR/.." && pwd -P)"
ARM_ROOT="$ARM_DIR/.root"
ARM_CACHE="$ARM_DIR/.cache"
ARM_WHEELS="$ARM_CACHE/wheels"
ARM_SUITE="${ARM_SUITE:-bookworm}"
ARM_MIRROR="${ARM_MIRROR:-http://deb.debian.org/debian}"
ARM_PYVER="3.11"  # bookworm's python3
ARM_TARBALL="$ARM_CACHE/root-$ARM_SUITE-arm64-py$ARM_PYVER.tar.zst"
# The emulated CPU: cortex-a76 (Raspberry Pi 5), cortex-a72 (Raspberry Pi 4) or neoverse-n1. The root sees a
# matching /proc/cpuinfo (arm/cpuinfo-$ARM_CPU.txt); qemu-aarch64 reads QEMU_CPU at every emulated exec.
ARM_CPU="${ARM_CPU:-cortex-a76}"
ARM_CPUINFO="$ARM_DIR/cpuinfo-$ARM_CPU.txt"
arm_env() {
    ARM_ENV=(PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$ARM_CPU"
             PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1)
}
arm_env

arm_log() { printf '[test-arm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
arm_die() { arm_log "ERROR: $*"; exit 1; }

arm_preflight() {
    [ "$(id -u)" = 0 ] || arm_die "must run as root (debootstrap, chroot and mount need it)"
    local tool
    for tool in debootstrap qemu-aarch64-static update-binfmts findmnt zstd; do
        command -v "$tool" >/dev/null || arm_die "missing $tool: apt-get install debootstrap qemu-user-static binfmt-support zstd"
    done
    if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || arm_die "binfmt qemu-aarch64 not registered (update-binfmts --enable qemu-aarch64)"
}

# Mount targets at or under the root, deepest first.
arm_mounts_under_root() {
    findmnt -rn -o TARGET | awk -v r="$ARM_ROOT" '$0 == r || index($0, r "/") == 1' | sort -r
}

arm_umount_all() {
    local target tries
    for tries in 1 2 3; do
        while read -r target; do
            [ -n "$target" ] && umount "$target" 2>/dev/null || true
        done < <(arm_mounts_under_root)
        [ -z "$(arm_mounts_under_root)" ] && return 0
        sleep 1
    done
    while read -r target; do
        [ -n "$target" ] && umount -l "$target" || true
    done < <(arm_mounts_under_root)
    [ -z "$(arm_mounts_under_root)" ] || { arm_log "still mounted under $ARM_ROOT:"; arm_mounts_under_root >&2; return 1; }
}

arm_mount_all() {
    [ -d "$ARM_ROOT/proc" ] && [ -d "$ARM_ROOT/dev" ] || arm_die "$ARM_ROOT is not a root file system"
    [ -f "$ARM_CPUINFO" ] || arm_die "no $ARM_CPUINFO: ARM_CPU must be cortex-a76, cortex-a72 or neoverse-n1"
    arm_umount_all
    mount -t proc proc "$ARM_ROOT/proc"
    # onnxruntime's ARM CPU detection segfaults under qemu when it reads the host's x86 cpuinfo.
    mount --bind "$ARM_CPUINFO" "$ARM_ROOT/proc/cpuinfo"
    mount -t tmpfs -o mode=755,size=1m devtmp "$ARM_ROOT/dev"
    mknod -m 666 "$ARM_ROOT/dev/null" c 1 3
    mknod -m 666 "$ARM_ROOT/dev/zero" c 1 5
    mknod -m 666 "$ARM_ROOT/dev/random" c 1 8
    mknod -m 666 "$ARM_ROOT/dev/urandom" c 1 9
    mknod -m 666 "$ARM_ROOT/dev/tty" c 5 0
    mkdir -p "$ARM_ROOT/dev/shm" "$ARM_ROOT/dev/pts"
    mount -t tmpfs -o mode=1777,size=256m shm "$ARM_ROOT/dev/shm"
    ln -s /proc/self/fd "$ARM_ROOT/dev/fd"
    # A tiny fake /sys: the cpu lists that onnxruntime's cpuinfo library parses (it warns without them).
    mount -t tmpfs -o mode=755,size=1m systmp "$ARM_ROOT/sys"
    mkdir -p "$ARM_ROOT/sys/devices/system/cpu"
    local list f
    list="0-$(($(grep -c '^processor' "$ARM_CPUINFO") - 1))"
    for f in possible present online; do echo "$list" >"$ARM_ROOT/sys/devices/system/cpu/$f"; done
}

# Run a command inside the root (mounts must be up). Arguments: the command and its arguments.
arm_chroot() {
    env -i "${ARM_ENV[@]}" "$(command -v chroot)" "$ARM_ROOT" "$@"
}

arm_remove_root() {
    arm_umount_all || arm_die "refusing to remove $ARM_ROOT: something is still mounted under it"
    [ -z "$(arm_mounts_under_root)" ] || arm_die "refusing to remove $ARM_ROOT: mounts remain"
    case "$ARM_ROOT" in */arm/.root) ;; *) arm_die "refusing to remove unexpected path $ARM_ROOT" ;; esac
    rm -rf --one-file-system "$ARM_ROOT"
}

# What the arm64 venv gets from the wheelhouse: the runtime's dependencies, llguidance (the json extra: constrained
# output) and the tests' own (pytest, hypothesis, jsonschema).
ARM_TEST_DEPS=(pytest hypothesis jsonschema)
# The serve extra (`clova-edge serve`): starlette, uvicorn, pydantic (pydantic-core ships an aarch64 wheel).
ARM_SERVE_DEPS=(starlette uvicorn pydantic)

# Download the aarch64 wheels of the runtime's dependencies on the host, pinned to the host's numpy, onnxruntime
# and llguidance so that both sides run the same kernels and grammar engine.
arm_download_wheels() {
    local host_py="$REPO_DIR/.venv/bin/python" pins=()
    if [ -x "$host_py" ]; then
        mapfile -t pins < <("$host_py" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
for name in ("numpy", "onnxruntime", "llguidance"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
)
    else
        host_py=python3
        pins=(numpy onnxruntime llguidance)
    fi
    mkdir -p "$ARM_WHEELS"
    arm_log "pip download (aarch64, cp${ARM_PYVER/./}): ${pins[*]} typer jinja2 regex ${ARM_TEST_DEPS[*]}" \
        "${ARM_SERVE_DEPS[*]} setuptools wheel"
    nice "$host_py" -m pip download -q --dest "$ARM_WHEELS" --only-binary=:all: \
        --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_31_aarch64 \
        --python-version "$ARM_PYVER" --implementation cp --abi "cp${ARM_PYVER/./}" \
        "${pins[@]}" typer jinja2 regex "${ARM_TEST_DEPS[@]}" "${ARM_SERVE_DEPS[@]}" "setuptools>=68" wheel
}

# The wheelhouse has every wheel the venv installs (a wheelhouse or root cached before llguidance, jsonschema and
# the serve extra were added gets them now), and the root's copy of it (/opt/wheels) matches.
arm_sync_wheels() {
    local want
    for want in onnxruntime llguidance jsonschema rpds_py starlette uvicorn pydantic_core; do
        [ -n "$(ls "$ARM_WHEELS"/${want}-*.whl 2>/dev/null)" ] || { arm_download_wheels; break; }
    done
    mkdir -p "$ARM_ROOT/opt/wheels"
    cp -u "$ARM_WHEELS"/*.whl "$ARM_ROOT/opt/wheels/"
}

# debootstrap + python3-venv + CA certificates + /opt/venv with the runtime's dependencies. Stages are
# stamped inside the root so an interrupted build resumes.
arm_build_root() {
    if [ ! -e "$ARM_ROOT/.clova-stage-base" ]; then
        [ -e "$ARM_ROOT" ] && arm_remove_root
        arm_log "debootstrap $ARM_SUITE arm64 (minbase + python3-venv) -> $ARM_ROOT"
        nice debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$ARM_SUITE" "$ARM_ROOT" "$ARM_MIRROR"
        arm_umount_all
        touch "$ARM_ROOT/.clova-stage-base"
    fi
    if [ ! -e "$ARM_ROOT/.clova-stage-venv" ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$ARM_ROOT/usr/local/share/ca-certificates/host-ca.crt" 2>/dev/null || true
        cp /etc/resolv.conf "$ARM_ROOT/etc/resolv.conf" 2>/dev/null || true
        rm -rf "$ARM_ROOT/opt/wheels" && arm_sync_wheels
        arm_mount_all
        arm_log "update-ca-certificates; python3 -m venv /opt/venv; pip install the wheels (emulated)"
        arm_chroot update-ca-certificates >/dev/null 2>&1 || true
        arm_chroot /usr/bin/python3 -m venv /opt/venv
        arm_chroot nice /opt/venv/bin/pip install -q --no-index --find-links /opt/wheels \
            numpy onnxruntime typer jinja2 regex "${ARM_TEST_DEPS[@]}"
        arm_chroot /opt/venv/bin/python -c "import numpy, onnxruntime; print('arm root ok:', numpy.__version__, onnxruntime.__version__)"
        arm_umount_all
        touch "$ARM_ROOT/.clova-stage-venv"
    fi
}

arm_save_tarball() {
    arm_umount_all || arm_die "cannot tar the root while it is mounted"
    mkdir -p "$ARM_CACHE"
    arm_log "caching the root -> $ARM_TARBALL"
    nice tar -C "$ARM_ROOT" --numeric-owner -cpf - . | nice zstd -q -T2 -10 -o "$ARM_TARBALL.part"
    mv "$ARM_TARBALL.part" "$ARM_TARBALL"
}

arm_restore_tarball() {
    [ -e "$ARM_ROOT" ] && arm_remove_root
    mkdir -p "$ARM_ROOT"
    arm_log "restoring the root from $ARM_TARBALL"
    zstd -q -dc "$ARM_TARBALL" | tar -C "$ARM_ROOT" --numeric-owner -xpf -
}

# Make sure a finished root is at $ARM_ROOT: reuse it, restore it from the cache, or build (and cache) it.
arm_ensure_root() {
    if [ -e "$ARM_ROOT/.clova-stage-venv" ]; then
        arm_log "reusing $ARM_ROOT"
    elif [ -e "$ARM_TARBALL" ]; then
        arm_restore_tarball
    else
        arm_build_root
        arm_save_tarball
    fi
}
