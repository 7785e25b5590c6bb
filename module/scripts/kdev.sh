#!/bin/sh
# Unpack a kernel image's kernel-dev.tar at its own path (usr/src/linux-headers-<release>) and
# write the facts lkbuild checks the module build against: the release, the kernel's config,
# the compiler the kernel was built with and the one this builder has, and the vermagic of
# an in-tree module when the image ships any.
# usage: kdev.sh KERNEL_ROOT OUT
set -eu
kernel=$1 out=$2
mkdir -p "$out/facts"
dev="$kernel/kernel-dev.tar"
if [ ! -f "$dev" ]; then
  echo "lkbuild: the kernel image has no /kernel-dev.tar" >&2
  exit 1
fi
if [ "${LK_DEV_PRESENT:-0}" = 1 ] && [ -f /usr/src/kernel/.config ]; then
  # lkbuild's -builder image of this very kernel: its kernel-dev is unpacked already.
  kdir=$(readlink -f /usr/src/kernel)
else
  top=$(tar -tf "$dev" | sed -e 's#^\./##' | grep -m 1 -E '^usr/src/[^/]+/\.config$' \
    | sed 's#/\.config$##' || true)
  if [ -z "$top" ]; then
    echo "lkbuild: the kernel image's /kernel-dev.tar has no usr/src/<dir>/.config" >&2
    exit 1
  fi
  tar -xf "$dev" -C / --no-same-owner
  kdir="/$top"
fi
if [ -f "$kdir/include/config/kernel.release" ]; then
  release=$(cat "$kdir/include/config/kernel.release")
else
  release=${kdir#/usr/src/linux-headers-}
fi
cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$kdir/.config")
case "$cc_text" in
  *clang*) have=$(clang --version 2>/dev/null | head -n 1 || true) ;;
  *) have=$("${LK_CROSS_COMPILE:-}gcc" --version 2>/dev/null | head -n 1 || true) ;;
esac
vermagic=""
if [ "${LK_FIND_VERMAGIC:-1}" = 1 ] && [ -f "$kernel/kernel.tar" ]; then
  ko=$(tar -tf "$kernel/kernel.tar" | grep -m 1 -E '\.ko(\.xz|\.gz|\.zst)?$' || true)
  if [ -n "$ko" ]; then
    mkdir -p /tmp/lkbuild-ko
    tar -xf "$kernel/kernel.tar" -C /tmp/lkbuild-ko "$ko"
    vermagic=$(modinfo -F vermagic "/tmp/lkbuild-ko/$ko" 2>/dev/null || true)
    rm -rf /tmp/lkbuild-ko
  fi
fi
printf '%s\n' "$release" > "$out/facts/release"
printf '%s\n' "$kdir" > "$out/facts/kerneldir"
printf '%s\n' "$cc_text" > "$out/facts/kernel-compiler"
printf '%s\n' "$have" > "$out/facts/builder-compiler"
printf '%s\n' "$vermagic" > "$out/facts/vermagic"
cp "$kdir/.config" "$out/facts/config"
printf 'KERNELDIR=%s\nKVER=%s\n' "$kdir" "$release" > "$out/env"
ln -sfn "$kdir" /usr/src/lkbuild-kernel
