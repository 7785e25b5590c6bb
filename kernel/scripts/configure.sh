#!/bin/sh
# Merge the config and fragments and run olddefconfig, the input alone and with them. Writes
# WORK/out/: config (final, with fragments), base (the input config alone through
# olddefconfig, for the finality check), requested (the input config), fragments/ and
# kernelrelease.
# usage: configure.sh CACHE KEY SOURCE_KEY SOURCE_DIR PATCH_DIR CONFIG_DIR WORK
set -eu
cache=$1 key=$2 source_key=$3 src=$4 patches=$5 cfg=$6 work=$7
mkdir -p "$cache/kbuild"
exec 9>"$cache/kbuild/$key.lock"
flock 9
/lkbuild/source.sh "$cache" "$key" "$source_key" "$src" "$patches"
make_args="ARCH=$KARCH CROSS_COMPILE=$CROSS_COMPILE"
[ -n "${LOCALVERSION:-}" ] && make_args="$make_args LOCALVERSION=$LOCALVERSION"
# Both olddefconfig runs use the key's build dir, so kconfig's own tools are compiled once
# for the build, not once per run. The dir ends with the final config; one that is only
# newer makes kbuild re-run syncconfig, which rewrites no header whose content stays.
kc="$cache/kbuild/$key"
mkdir -p "$work/out/fragments"
/lkbuild/unfinished.sh start "$kc"
cd "$cache/src/$key"
if [ -n "${KCONFIG_BASE:-}" ]; then
  # Start from one of the kernel's own configs (defconfig, tinyconfig, ...) instead of a file.
  make -s O="$kc" $make_args "$KCONFIG_BASE"
  cp "$kc/.config" "$cfg/config"
fi
cp "$cfg/config" "$kc/.config"
make -s O="$kc" $make_args olddefconfig
cp "$kc/.config" "$work/out/base"
cp "$cfg/config" "$kc/.config"
frags=$(find "$cfg/fragments" -maxdepth 1 -type f 2>/dev/null | sort)
if [ -n "$frags" ]; then
  (cd "$kc" && "$cache/src/$key/scripts/kconfig/merge_config.sh" -m .config $frags >/dev/null)
  cp $frags "$work/out/fragments/"
fi
make -s O="$kc" $make_args olddefconfig
cp "$cfg/config" "$work/out/requested"
cp "$kc/.config" "$work/out/config"
make -s O="$kc" $make_args kernelrelease > "$work/out/kernelrelease"
/lkbuild/unfinished.sh done "$kc"
# Symbols whose value the toolchain decides ($(cc-option ...), $(success ...), ...): a
# different compiler changes them without making the config less final.
find . -path ./Documentation -prune -o -name 'Kconfig*' -type f -print | xargs awk '
  /^[ \t]*(menu)?config[ \t]+[A-Za-z0-9_]+/ { sym = $2 }
  /^[ \t]*(choice|endchoice|menu|endmenu|if|endif|source|comment)([ \t]|$)/ { sym = "" }
  /\$\((cc-|as-|ld-|success|failure|shell|rustc|CC|LD|AS|OBJCOPY|python)/ {
    if (sym) print "CONFIG_" sym
  }' | sort -u > "$work/out/toolchain-symbols"
