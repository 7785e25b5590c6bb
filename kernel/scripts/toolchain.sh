#!/bin/sh
# Make sure the build image can build a kernel. linuxkit/alpine images install their
# toolchain with apk (network needed); lkbuild's offline image already has everything.
set -eu
if command -v apk >/dev/null 2>&1; then
  apk add --no-cache argp-standalone bash bc binutils-dev bison build-base cpio diffutils \
    elfutils-dev findutils flex gmp-dev kmod linux-headers mpc1-dev mpfr-dev ncurses-dev \
    openssl-dev patch perl python3 rsync sed tar util-linux xz zstd zlib-dev
fi
missing=""
for tool in make gcc "${CROSS_COMPILE:-}gcc" bc bison flex perl patch tar xz cpio depmod flock strings; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "lkbuild: build image lacks:$missing" >&2
  exit 1
fi
