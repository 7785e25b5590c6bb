#!/bin/sh
# Run CMD and write to FILE the largest resident set (bytes) of any process it ran: what one
# make job can cost, measured by the build itself; lkbuild sizes the next build's automatic
# jobs with it. While CMD runs, a line every LKBUILD_MEMORY_EVERY seconds (10) says the memory
# in use against the builder's limit (its cgroup's when it has one, else the VM's MemTotal):
# the progress display shows it, so a person sees when memory is the problem.
# Without python3 (a bare build image), CMD just runs.
# usage: peak.sh FILE CMD...
set -eu
file=$1
shift
command -v python3 >/dev/null 2>&1 || exec "$@"
exec python3 -c '
import os, resource, subprocess, sys, threading

def read(path):
    with open(path) as f:
        return f.read().strip()

def in_use():
    """MiB in use and the limit: the cgroup (v2) when it is limited, else the machine."""
    root = os.environ.get("LKBUILD_CGROUP_ROOT", "/sys/fs/cgroup")
    try:
        limit = read(root + "/memory.max")
        if limit != "max":
            return int(read(root + "/memory.current")) >> 20, int(limit) >> 20
    except (OSError, ValueError):
        pass
    info = {}
    for line in read(os.environ.get("LKBUILD_MEMINFO", "/proc/meminfo")).splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) >> 10
    return info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0)), info["MemTotal"]

def report(stop, every):
    while not stop.wait(every):
        try:
            used, limit = in_use()
        except (OSError, ValueError, KeyError):
            return
        print("lkbuild: memory in use: %d MiB of %d MiB" % (used, limit), flush=True)

stop = threading.Event()
threading.Thread(target=report, args=(stop, float(os.environ.get("LKBUILD_MEMORY_EVERY", "10"))),
                 daemon=True).start()
code = subprocess.call(sys.argv[2:])
stop.set()
with open(sys.argv[1], "w") as f:
    f.write("%d\n" % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(code if code >= 0 else 128 - code)' "$file" "$@"
