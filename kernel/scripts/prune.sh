#!/bin/sh
# Remove one cache scope's unpacked sources and build dirs from the build cache mount, each
# under its locks so a running build (or one linking a tree from this scope) is waited for,
# not broken. Other scopes' trees that share files with these keep them; the UAPI headers of
# a source go with its last tree. Writes the bytes freed to OUT/freed.
# usage: prune.sh CACHE SCOPE OUT
set -eu
cache=$1 scope=$2 out=$3
mkdir -p "$out" "$cache/kbuild" "$cache/src"
before=$(df -Pk "$cache" | awk 'NR == 2 { print $4 }')
for dir in "$cache/kbuild/$scope"-* "$cache/src/$scope"-* "$cache/src/.$scope"-* \
           "$cache/pkg/$scope"-*; do
  [ -d "$dir" ] || continue
  key=$(basename "$dir" | sed -e 's/^\.//' -e 's/\.tmp$//')
  exec 9>"$cache/kbuild/$key.lock"
  flock 9
  exec 8>"$cache/src/$key.lock"
  flock 8
  rm -rf "$dir"
  exec 8>&- 9>&-
done
# The UAPI headers (and a copy of them cut short) of a source no tree left is built from.
for tar in "$cache"/uapi/*.tar*; do
  [ -f "$tar" ] || continue
  source_key=$(basename "$tar" | sed 's/-[^-]*\.tar.*$//')
  grep -qsx "$source_key" "$cache"/src/*/.lkbuild-source-key || rm -f "$tar"
done
after=$(df -Pk "$cache" | awk 'NR == 2 { print $4 }')
echo $(( (after > before ? after - before : 0) * 1024 )) > "$out/freed"
