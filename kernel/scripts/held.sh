#!/bin/sh
# What a build dir holds before make: its objects (not those under scripts/, the host tools
# the config step compiled) and, when it holds any, how far the config its last make built
# (include/config/auto.conf, which make's syncconfig writes) is from its .config now. A few
# symbols: a rebuild. Most of them (the small config's build dir given the full one): make
# compiles nearly everything again.
# usage: held.sh BUILD_DIR
set -eu
build=$1
objects=$(find "$build" -name '*.o' -not -path "$build/scripts/*" | wc -l)
last=$build/include/config/auto.conf
if [ "$objects" -eq 0 ] || [ ! -f "$last" ] || [ ! -f "$build/.config" ]; then
  echo "$objects objects in the build dir before make"
  exit 0
fi
now=$(mktemp) before=$(mktemp)
trap 'rm -f "$now" "$before"' EXIT
# auto.conf gives strings unquoted (6.x): compared without .config's quotes.
symbols() {
  grep '^CONFIG_' "$1" | sed 's/^\(CONFIG_[^=]*\)="\(.*\)"$/\1=\2/' | sort
}
symbols "$build/.config" > "$now"
symbols "$last" > "$before"
# A symbol whose value changed is on both sides: counted once, by name.
changed=$(comm -3 "$now" "$before" | sed 's/^\t//; s/=.*//' | sort -u | wc -l)
echo "$objects objects in the build dir before make, built from a config that differs in" \
  "$changed of $(wc -l < "$now") symbols"
