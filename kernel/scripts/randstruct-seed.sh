#!/bin/sh
# Stands in for the kernel's scripts/gen-randstruct-seed.sh when a target's seed is given
# (RANDSTRUCT_SEED): a RANDSTRUCT kernel's struct layouts, the hash in its vermagic and the
# GCC plugin all come from that seed, so a module loads only if built with the target's.
# Same interface and output format as the kernel's: SEED_FILE HASH_HEADER.
set -eu
seed=${RANDSTRUCT_SEED:?RANDSTRUCT_SEED is not set}
printf '%s\n' "$seed" > "$1"
hash=$(printf '%s' "$seed" | sha256sum | cut -d' ' -f1)
printf '#define RANDSTRUCT_HASHED_SEED "%s"\n' "$hash" > "$2"
