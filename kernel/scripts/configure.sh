#!/bin/sh
# The config step, in two BuildKit steps so that the first is taken from the layer cache
# when only the fragments change (a one-symbol rebuild then runs olddefconfig once):
#   base:  the input config (or a kernel base config) alone through olddefconfig. Writes
#          WORK/out/: requested (the input config), base (for the finality check) and
#          toolchain-symbols.
#   final: the fragments merged onto the requested config, through olddefconfig again (with
#          none, the base config is the final one). Writes WORK/out/: config, fragments/ and
#          kernelrelease.
# Both use the key's build dir, so kconfig's own tools are compiled once for the build. The
# dir ends with the final config, rewritten only when it changed: one that is only newer
# makes kbuild re-run syncconfig.
# usage: configure.sh base|final CACHE KEY SOURCE_KEY SOURCE_DIR PATCH_DIR CONFIG_DIR WORK
set -eu
step=$1 cache=$2 key=$3 source_key=$4 src=$5 patches=$6 cfg=$7 work=$8
mkdir -p "$cache/kbuild"
exec 9>"$cache/kbuild/$key.lock"
flock 9
/lkbuild/source.sh "$cache" "$key" "$source_key" "$src" "$patches"
make_args="ARCH=$KARCH CROSS_COMPILE=$CROSS_COMPILE"
[ -n "${LOCALVERSION:-}" ] && make_args="$make_args LOCALVERSION=$LOCALVERSION"
kc="$cache/kbuild/$key"
out="$work/out"
mkdir -p "$out/fragments"
/lkbuild/unfinished.sh start "$kc"
cd "$cache/src/$key"
case $step in
base)
  # Symbols whose value the toolchain decides ($(cc-option ...), $(success ...), ...): a
  # different compiler changes them without making the config less final.
  find . -path ./Documentation -prune -o -name 'Kconfig*' -type f -print | xargs awk '
    /^[ \t]*(menu)?config[ \t]+[A-Za-z0-9_]+/ { sym = $2 }
    /^[ \t]*(choice|endchoice|menu|endmenu|if|endif|source|comment)([ \t]|$)/ { sym = "" }
    /\$\((cc-|as-|ld-|success|failure|shell|rustc|CC|LD|AS|OBJCOPY|python)/ {
      if (sym) print "CONFIG_" sym
    }' | sort -u > "$out/toolchain-symbols" &
  symbols=$!
  if [ -n "${KCONFIG_BASE:-}" ]; then
    # Start from one of the kernel's own configs (defconfig, tinyconfig, ...) instead.
    make -s O="$kc" $make_args "$KCONFIG_BASE"
    cp "$kc/.config" "$cfg/config"
  fi
  cp "$cfg/config" "$out/requested"
  cp "$cfg/config" "$kc/.config"
  make -s O="$kc" $make_args olddefconfig
  cp "$kc/.config" "$out/base"
  wait "$symbols"
  ;;
final)
  frags=$(find "$cfg/fragments" -maxdepth 1 -type f 2>/dev/null | sort)
  if [ -n "$frags" ]; then
    cp "$out/requested" "$kc/.config"
    (cd "$kc" && "$cache/src/$key/scripts/kconfig/merge_config.sh" -m .config $frags >/dev/null)
    cp $frags "$out/fragments/"
    make -s O="$kc" $make_args olddefconfig
  else
    cmp -s "$out/base" "$kc/.config" || cp "$out/base" "$kc/.config"
  fi
  cp "$kc/.config" "$out/config"
  make -s O="$kc" $make_args kernelrelease > "$out/kernelrelease"
  ;;
*)
  echo "usage: configure.sh base|final CACHE KEY ..." >&2
  exit 2
  ;;
esac
/lkbuild/unfinished.sh done "$kc"
