#!/bin/sh
# Remove one cache scope's unpacked sources and build dirs from the build cache mount, each
# under its lock so a running build is waited for, not broken. Writes the bytes freed to
# OUT/freed.
# usage: prune.sh CACHE SCOPE OUT
set -eu
cache=$1 scope=$2 out=$3
mkdir -p "$out" "$cache/kbuild" "$cache/src"
total=0
for dir in "$cache/kbuild/$scope"-* "$cache/src/$scope"-* "$cache/src/.$scope"-*; do
  [ -d "$dir" ] || continue
  key=$(basename "$dir" | sed -e 's/^\.//' -e 's/\.tmp$//')
  exec 9>"$cache/kbuild/$key.lock"
  flock 9
  size=$(( $(du -sk "$dir" | cut -f1) * 1024 ))
  rm -rf "$dir"
  total=$((total + size))
  exec 9>&-
done
echo "$total" > "$out/freed"
