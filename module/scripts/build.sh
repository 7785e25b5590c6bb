#!/bin/sh
# Build the module sources with the generated steps, then collect the .ko files (those the
# recipe names in STEPS_DIR/modules, else every one) into
# OUT/root/lib/modules/<release>/extra with depmod's files, and one facts line per module
# (name, file, vermagic, depends) for lkbuild's checks and the loader's order.
# usage: build.sh SRC STEPS OUT
set -eu
src=$1 steps=$2 out=$3
. /lkbuild-kernel/env
export KERNELDIR KDIR="$KERNELDIR" KVER ARCH="$LK_ARCH" CROSS_COMPILE="$LK_CROSS_COMPILE" \
  CROSS_HOST="$LK_CROSS_HOST" JOBS="${MAKE_JOBS:-1}" DESTDIR="$out/tools"
mods="$out/root/lib/modules/$KVER/extra"
mkdir -p "$mods" "$out/facts" "$out/tools"
cd "$src"
echo "lkbuild: building $(pwd) against $KERNELDIR ($KVER), ARCH=$ARCH CROSS_COMPILE=$CROSS_COMPILE -j$JOBS"
sh "$steps"
find . -name '*.ko' -type f | sort > /tmp/lkbuild-kos
wanted=$(dirname "$steps")/modules
if [ -s "$wanted" ]; then
  # The recipe names its modules: a configure script's test modules are not among them.
  for name in $(cat "$wanted"); do
    grep -E "/$name\.ko\$" /tmp/lkbuild-kos | head -n 1 || true
  done > /tmp/lkbuild-wanted
  mv /tmp/lkbuild-wanted /tmp/lkbuild-kos
fi
if [ ! -s /tmp/lkbuild-kos ]; then
  echo "lkbuild: the module build made no .ko files" >&2
  exit 1
fi
while read -r ko; do
  name=$(basename "$ko")
  if [ -e "$mods/$name" ]; then
    echo "lkbuild: the module build made two files named $name" >&2
    exit 1
  fi
  cp "$ko" "$mods/$name"
  "${CROSS_COMPILE}strip" --strip-debug "$mods/$name"
done < /tmp/lkbuild-kos
depmod -b "$out/root" "$KVER"
: > "$out/facts/modules"
for ko in "$mods"/*.ko; do
  printf '%s\t%s\t%s\t%s\n' "$(modinfo -F name "$ko")" "extra/${ko##*/}" \
    "$(modinfo -F vermagic "$ko")" "$(modinfo -F depends "$ko")" >> "$out/facts/modules"
done
# Only the tools the recipe names go into the loader image; anything else installed under
# DESTDIR is left out.
keep=$(dirname "$steps")/tools
rm -rf /tmp/lkbuild-tools; mkdir -p /tmp/lkbuild-tools
for f in $(cat "$keep" 2>/dev/null); do
  f=${f#/}
  if [ ! -e "$out/tools/$f" ]; then
    echo "lkbuild: the build did not install the tool $f under \$DESTDIR" >&2
    exit 1
  fi
  mkdir -p "/tmp/lkbuild-tools/$(dirname "$f")"
  cp -a "$out/tools/$f" "/tmp/lkbuild-tools/$f"
done
rm -rf "$out/tools"; mv /tmp/lkbuild-tools "$out/tools"
echo "lkbuild: built $(wc -l < "$out/facts/modules") module(s) for $KVER"
