#!/bin/sh
# Make CACHE/src/KEY the unpacked source with the patches applied. The path stays the same
# for a build key whatever the source, so make's dependency files stay valid; it is made
# again only when the source or patches (SOURCE_KEY) change. The caller holds the key's lock.
#
# A key that needs a tree another key (of any cache scope) already holds, such as the other
# arch of the same version, takes a hard-link copy of it: seconds and no space, where an
# unpack takes a quarter of a minute and 1.5 GB. Out-of-tree builds never write to their
# source and nothing here writes a file in place, so the linked trees never diverge.
#
# The key's build dir (CACHE/kbuild/KEY) starts over when the tarball (SOURCE_SHA256) is
# another one: its files would carry older times than the objects built from the last one.
# usage: source.sh CACHE KEY SOURCE_KEY SOURCE_DIR PATCH_DIR
set -eu
cache=$1 key=$2 source_key=$3 src=$4 patches=$5
dest="$cache/src/$key"
build="$cache/kbuild/$key"
mkdir -p "$build" "$cache/src"
if [ "$(cat "$build/.lkbuild-source-sha256" 2>/dev/null)" != "${SOURCE_SHA256:?}" ]; then
  find "$build" -mindepth 1 -delete
  printf '%s\n' "$SOURCE_SHA256" > "$build/.lkbuild-source-sha256"
fi
[ "$(cat "$dest/.lkbuild-source-key" 2>/dev/null)" = "$source_key" ] && exit 0
# Writers of a tree hold its lock exclusively, readers shared and never waiting: two keys
# that each hold the other's wanted tree cannot deadlock.
exec 8>"$dest.lock"
flock 8
tmp="$cache/src/.$key.tmp"
rm -rf "$tmp"
linked=""
for mark in "$cache"/src/*/.lkbuild-source-key; do
  donor=${mark%/.lkbuild-source-key}
  [ "$donor" != "$dest" ] && [ "$(cat "$mark" 2>/dev/null)" = "$source_key" ] || continue
  exec 7>"$donor.lock"
  if flock -n -s 7 && [ "$(cat "$mark" 2>/dev/null)" = "$source_key" ] \
      && cp -al "$donor" "$tmp" 2>/dev/null; then
    linked=$donor
  else
    rm -rf "$tmp"
  fi
  exec 7>&-
  [ -n "$linked" ] && break
done
if [ -n "$linked" ]; then
  echo "lkbuild: source tree $source_key linked from $(basename "$linked")"
else
  mkdir -p "$tmp"
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
  cat /dev/null $(find "$patches" -maxdepth 1 -name '*.patch' -type f) | grep '^+++ ' \
    | sed -e 's/^+++ [^/]*\///' -e 's/[[:space:]].*//' | sort -u > "$tmp/.lkbuild-patched" || true
  printf '%s\n' "$source_key" > "$tmp/.lkbuild-source-key"
fi
# Files the old and the new patches touch must look newer than their objects; each gets an
# inode of its own first, so the trees it is linked with keep their times.
for f in $(cat "$dest/.lkbuild-patched" "$tmp/.lkbuild-patched" 2>/dev/null | sort -u); do
  if [ -f "$tmp/$f" ]; then
    cp -p "$tmp/$f" "$tmp/$f.lkbuild" && mv -f "$tmp/$f.lkbuild" "$tmp/$f" && touch "$tmp/$f"
  fi
done
rm -rf "$dest"
mv "$tmp" "$dest"
