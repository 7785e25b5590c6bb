#!/usr/bin/env bash
# Provision a fresh Debian bookworm machine for lkbuild's tests: Debian packages,
# the buildx plugin (trixie only), busybox for arm64, and the Python package.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# trixie is needed for single binaries (docker-buildx); keep it from upgrading anything.
if [ ! -f /etc/apt/sources.list.d/lkbuild-trixie.sources ]; then
  $SUDO tee /etc/apt/sources.list.d/lkbuild-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO tee /etc/apt/preferences.d/lkbuild-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq -t bookworm --no-install-recommends \
  debootstrap linux-source-6.12 qemu-system-x86 qemu-system-arm busybox-static \
  gnupg gpgv xz-utils zstd cpio kmod openssh-server openssh-client docker-registry skopeo \
  ca-certificates curl strace flex bison clang-14 >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! docker buildx version >/dev/null 2>&1; then
  (cd "$work" && apt-get download -qq docker-buildx/trixie)
  dpkg -x "$work"/docker-buildx_*.deb "$work/buildx"
  $SUDO install -D -m 0755 "$work/buildx/usr/libexec/docker/cli-plugins/docker-buildx" \
    /usr/libexec/docker/cli-plugins/docker-buildx
fi
if [ ! -x /usr/local/lib/lkbuild/busybox-arm64 ]; then
  (cd "$work" && apt-get download -qq busybox-static:arm64/bookworm)
  dpkg -x "$work"/busybox-static_*_arm64.deb "$work/bb"
  $SUDO install -D -m 0755 "$work/bb/bin/busybox" /usr/local/lib/lkbuild/busybox-arm64
fi

# OpenZFS module sources for the zfs recipe's tests: the exact file module/zfs/recipe.yml pins
# (lkbuild checks its sha256), so the tests never download anything themselves.
zfs_deb=$(sed -n 's/^ *version: \(2\.[0-9.]*-[^ ]*\)$/zfs-dkms_\1_all.deb/p' module/zfs/recipe.yml)
if [ ! -f "/usr/local/lib/lkbuild/sources/$zfs_deb" ]; then
  $SUDO install -d /usr/local/lib/lkbuild/sources
  (cd "$work" && curl -fsSLO "http://deb.debian.org/debian/pool/contrib/z/zfs-linux/$zfs_deb")
  $SUDO install -m 0644 "$work/$zfs_deb" "/usr/local/lib/lkbuild/sources/$zfs_deb"
fi

# An earlier point release of the series than linux-source-6.12's, for the tests of configs made
# for another release (flex, bison and clang-14 above make configs the way another machine
# would: the kernel's own olddefconfig, outside lkbuild, with another compiler).
earlier=6.12.113-1~deb12u1
earlier_tarball="/usr/local/lib/lkbuild/sources/linux-source-${earlier%%-*}.tar.xz"
if [ ! -f "$earlier_tarball" ]; then
  (cd "$work" && apt-get download -qq "linux-source-6.12=$earlier")
  dpkg -x "$work"/linux-source-6.12_*_all.deb "$work/earlier"
  $SUDO install -D -m 0644 "$work/earlier/usr/src/linux-source-6.12.tar.xz" "$earlier_tarball"
  rm -rf "$work"/linux-source-6.12_*_all.deb "$work/earlier"
fi

python3 -m pip install -q --upgrade pip
python3 -m pip install -q -e '.[test]'
# pyenv installs console scripts behind shims that exist only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
