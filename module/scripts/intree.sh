#!/bin/sh
# What an in-tree module build would change on this kernel, asked of the kernel's own Kconfig:
# its config with each symbol of LK_INTREE set to m, through olddefconfig. Writes to OUT the
# kernel's config (config), the result (intree.config), the tree's Kconfig files and Makefiles
# (tree.tgz, for lkbuild to read which options and objects belong to which module) and the
# lines of the kernel's own headers that name a symbol it set (headers: FILE:LINE:TEXT).
# usage: intree.sh KERNEL_ROOT OUT
set -eu
kernel=$1 out=$2
if [ ! -f /lkbuild-kernel/env ]; then
  LK_DEV_PRESENT=1 /lkbuild/kdev.sh "$kernel" /lkbuild-kernel >/dev/null
fi
. /lkbuild-kernel/env
mkdir -p "$out"
cp "$KERNELDIR/.config" "$out/config"
work=$(mktemp -d)
cp "$KERNELDIR/.config" "$work/config"
for s in $LK_INTREE; do
  sed -i -e "/^$s=/d" -e "/^# $s is not set\$/d" "$work/config"
  echo "$s=m" >> "$work/config"
done
make -s -C "$KERNELDIR" ARCH="$LK_ARCH" CROSS_COMPILE="$LK_CROSS_COMPILE" \
  KCONFIG_CONFIG="$work/config" olddefconfig
cp "$work/config" "$out/intree.config"
(cd "$KERNELDIR" && find . \( -name 'Kconfig*' -o -name Makefile -o -name Kbuild \) -type f \
  ! -path './scripts/*' | tar -czf "$out/tree.tgz" -T -)
# The symbols olddefconfig set, and the lines of the kernel's own include dirs that name any
# of them (lkbuild keeps those that can change the kernel's structures or code).
grep -E '^CONFIG_[A-Za-z0-9_]+=' "$work/config" | sort > "$work/after"
grep -E '^CONFIG_[A-Za-z0-9_]+=' "$out/config" | sort > "$work/before"
comm -23 "$work/after" "$work/before" | cut -d= -f1 > "$work/new"
: > "$out/headers"
if [ -s "$work/new" ]; then
  pattern=$(sed 's/$/(_MODULE)?([^A-Za-z0-9_]|$)/' "$work/new" | paste -sd '|')
  dirs=include
  for d in "$KERNELDIR"/arch/*/include; do
    [ -d "$d" ] && dirs="$dirs ${d#"$KERNELDIR"/}"
  done
  (cd "$KERNELDIR" && grep -rnE --exclude-dir=config --exclude-dir=generated "$pattern" \
    $dirs 2>/dev/null || true) > "$out/headers"
fi
rm -rf "$work"
