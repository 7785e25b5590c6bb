#!/bin/sh
# The config step, in two BuildKit steps so that the first is taken from the layer cache
# when only the fragments change (a one-symbol rebuild then runs olddefconfig once):
#   base:  the input config (or a kernel base config) alone through olddefconfig. Writes
#          WORK/out/: requested (the input config), base (for the finality check) and
#          kconfig.tgz (the tree's Kconfig files, which say what each symbol is).
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
  # The finality check reads which symbols have a prompt, call the toolchain or exist at
  # all from the Kconfig files themselves (about 1.7 MB packed).
  find . -path ./Documentation -prune -o -path ./scripts/kconfig/tests -prune \
    -o -name 'Kconfig*' -type f -print | sort | tar -cf - -T - | gzip -c > "$out/kconfig.tgz" &
  symbols=$!
  if [ -n "${KCONFIG_BASE:-}" ]; then
    # Start from one of the kernel's own configs (defconfig, tinyconfig, ...) instead, with
    # the kernel's own fragments after it (defconfig+virt.config: make defconfig virt.config).
    make -s O="$kc" $make_args $(echo "$KCONFIG_BASE" | tr '+' ' ')
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
