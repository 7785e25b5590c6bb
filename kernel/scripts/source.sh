#!/bin/sh
# Make CACHE/src/KEY the unpacked source with the patches applied. The path stays the same
# for a build key whatever the source, so make's dependency files stay valid; it is unpacked
# again only when the source or patches (SOURCE_KEY) change. The caller holds the key's lock.
# usage: source.sh CACHE KEY SOURCE_KEY SOURCE_DIR PATCH_DIR
set -eu
cache=$1 key=$2 source_key=$3 src=$4 patches=$5
dest="$cache/src/$key"
[ "$(cat "$dest/.lkbuild-source-key" 2>/dev/null)" = "$source_key" ] && exit 0
tmp="$cache/src/.$key.tmp"
rm -rf "$tmp"; mkdir -p "$tmp"
tarball=$(find "$src" -maxdepth 1 -type f | head -n 1)
echo "lkbuild: unpacking $(basename "$tarball")"
tar -xf "$tarball" -C "$tmp" --strip-components=1 --no-same-owner
for p in $(find "$patches" -maxdepth 1 -name '*.patch' -type f | sort); do
  name=$(basename "$p")
  if ! out=$(cd "$tmp" && patch -p1 --forward --batch < "$p" 2>&1); then
    echo "$out" >&2
    hunk=$(echo "$out" | grep -m 1 -E 'FAILED|malformed|Reversed|can.t find file' || true)
    echo "lkbuild: patch ${name#[0-9][0-9][0-9][0-9]-} does not apply: ${hunk:-see the log}" >&2
    rm -rf "$tmp"
    exit 1
  fi
  echo "lkbuild: applied ${name#[0-9][0-9][0-9][0-9]-}"
done
# Files the old and the new patches touch must look newer than their objects.
cat /dev/null $(find "$patches" -maxdepth 1 -name '*.patch' -type f) | grep '^+++ ' \
  | sed -e 's/^+++ [^/]*\///' -e 's/[[:space:]].*//' | sort -u > "$tmp/.lkbuild-patched" || true
for f in $(cat "$dest/.lkbuild-patched" "$tmp/.lkbuild-patched" 2>/dev/null | sort -u); do
  [ -e "$tmp/$f" ] && touch "$tmp/$f"
done
printf '%s\n' "$source_key" > "$tmp/.lkbuild-source-key"
rm -rf "$dest"
mv "$tmp" "$dest"
