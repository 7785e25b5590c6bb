#!/bin/sh
# Run CMD and write to FILE the largest resident set (bytes) of any process it ran: what one
# make job can cost, measured by the build itself; lkbuild sizes the next build's automatic
# jobs with it. Without python3 (a bare build image), CMD just runs.
# usage: peak.sh FILE CMD...
set -eu
file=$1
shift
command -v python3 >/dev/null 2>&1 || exec "$@"
exec python3 -c '
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write("%d\n" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(code if code >= 0 else 128 - code)' "$file" "$@"
