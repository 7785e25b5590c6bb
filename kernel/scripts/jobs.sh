#!/bin/sh
# The make jobs the builder's own memory allows. lkbuild chose JOBS from the engine's memory;
# a builder in a memory-limited cgroup (a capped dockerd or CI runner) holds less, and only
# here is that limit visible. Automatic jobs are lowered to fit; asked-for jobs are kept, with
# a line naming what fits (the out-of-memory diagnosis quotes it).
# usage: jobs.sh JOBS AUTO(0|1) RESERVE_MB PER_JOB_MB   (prints the jobs to use)
set -eu
jobs=$1 auto=$2 reserve=$3 per_job=$4
root=${LKBUILD_CGROUP_ROOT:-/sys/fs/cgroup}
limit=$(awk '/^MemTotal:/ { printf "%d\n", $2 / 1024 }' "${LKBUILD_MEMINFO:-/proc/meminfo}")
where=MemTotal
cg=""
if [ -r "$root/memory/memory.stat" ]; then  # cgroup v1: the lowest limit on the way up
  cg=$(awk '/^hierarchical_memory_limit / { printf "%d\n", $2 / 1048576 }' "$root/memory/memory.stat")
elif [ -r "$root/memory.max" ]; then  # cgroup v2: this cgroup's own
  cg=$(awk '$1 != "max" { printf "%d\n", $1 / 1048576 }' "$root/memory.max")
fi
if [ -n "$cg" ] && [ "$cg" -lt "$limit" ]; then
  limit=$cg where="cgroup limit"
fi
fit=$(( (limit - reserve) / per_job ))
[ "$fit" -ge 1 ] || fit=1
echo "lkbuild: builder memory: $where $limit MiB, room for -j$fit" >&2
if [ "$fit" -lt "$jobs" ]; then
  if [ "$auto" = 1 ]; then
    echo "lkbuild: the builder's memory ($where $limit MiB) allows -j$fit: using it" >&2
    jobs=$fit
  else
    echo "lkbuild: -j$jobs is more than the builder's memory ($where $limit MiB) allows -j$fit" >&2
  fi
fi
echo "$jobs"
