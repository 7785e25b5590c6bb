#!/bin/sh
# Print the bytes the given dirs hold, as a whole number: mawk (Debian's awk) prints numbers
# from 2^31 on as 3.072e+09, which is no number to the reader of a build's facts.
# usage: disk.sh DIR...
set -eu
du -sk "$@" | awk '{ kb += $1 } END { printf "%.0f\n", kb * 1024 }'
