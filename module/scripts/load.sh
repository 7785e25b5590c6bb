#!/bin/sh
# The loader image's entrypoint: check that the running kernel is the one these modules were
# built for, then load them from this image's own dir in dependency order. Every problem is
# one line starting with "lkbuild-loader: error:"; the exit status is 1 when there was any.
# Arguments, when given, run after a successful load (e.g. the tools the image carries).
# It runs under this image's static busybox, on Docker Desktop or in a test VM alike.
here=/lkbuild
bb=$here/bin/busybox
for applet in cat cut dmesg grep head insmod modinfo modprobe sed sha256sum tail tr uname zcat; do
  eval "$applet() { \"$bb\" $applet \"\$@\"; }"
done
. "$here/loader.conf"

failed=0
say() { echo "lkbuild-loader: $*"; }
fail() { echo "lkbuild-loader: error: $*" >&2; failed=1; }
words() { set -f; set -- $*; set +f; echo "$*"; }

# The running kernel's vermagic: from one of its own modules, else computed from
# /proc/config.gz the way include/linux/vermagic.h builds it; empty when neither is there.
kernel_vermagic() {
  ko=$(find_ko "/lib/modules/$1")
  if [ -n "$ko" ]; then
    words "$(modinfo -F vermagic "$ko" 2>/dev/null)"
    return
  fi
  [ -r /proc/config.gz ] || return 0
  zcat /proc/config.gz > /tmp/lkbuild-config 2>/dev/null || return 0
  on() { grep -q "^$1=y" /tmp/lkbuild-config; }
  v=$1
  on CONFIG_SMP && v="$v SMP"
  if on CONFIG_PREEMPT_BUILD; then v="$v preempt"; elif on CONFIG_PREEMPT_RT; then v="$v preempt_rt"; fi
  on CONFIG_MODULE_UNLOAD && v="$v mod_unload"
  on CONFIG_MODVERSIONS && v="$v modversions"
  [ -n "$LK_ARCH_VERMAGIC" ] && v="$v $LK_ARCH_VERMAGIC"
  if on CONFIG_RANDSTRUCT_FULL || on CONFIG_RANDSTRUCT_PERFORMANCE; then
    v="$v RANDSTRUCT_?"
  fi
  echo "$v"
}
find_ko() {
  [ -d "$1" ] || return 0
  for f in "$1"/kernel/*/*.ko "$1"/kernel/*/*/*.ko "$1"/kernel/*/*/*/*.ko; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
}
# A RANDSTRUCT seed cannot be read from the config: compare everything but its hash then.
same_vermagic() {
  case "$1" in
    *"RANDSTRUCT_?") [ "${1% RANDSTRUCT_?}" = "$(echo "$2" | sed 's/ RANDSTRUCT_[^ ]*//')" ] ;;
    *) [ "$1" = "$2" ] ;;
  esac
}

release=$(uname -r)
arch=$(uname -m)
want=$(words "$LK_VERMAGIC")
if [ "$arch" != "$LK_UNAME" ]; then
  fail "arch mismatch: the running kernel is $arch, these modules are for $LK_UNAME"
fi
if [ ! -r /proc/modules ]; then
  fail "the running kernel $release has no module support (no /proc/modules)"
elif [ "$(cat /proc/sys/kernel/modules_disabled 2>/dev/null)" = 1 ]; then
  fail "module loading is disabled on this kernel (kernel.modules_disabled=1); only a reboot enables it again"
fi
have=$(kernel_vermagic "$release")
if [ -n "$have" ]; then
  if ! same_vermagic "$have" "$want"; then
    fail "vermagic mismatch: the running kernel has '$have', these modules were built for '$want' (build them for this kernel with inv buildmodule)"
  fi
elif [ "$release" != "$LK_RELEASE" ]; then
  fail "vermagic mismatch: the running kernel is release $release, these modules were built for $LK_RELEASE (build them for this kernel with inv buildmodule)"
else
  say "note: cannot read this kernel's vermagic (no /proc/config.gz, no in-tree module): checked its release only"
fi
if [ "$failed" = 0 ] && [ -n "$LK_CONFIG_SHA256" ] && [ -r /proc/config.gz ]; then
  sum=$(zcat /proc/config.gz 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ -n "$sum" ] && [ "$sum" != "$LK_CONFIG_SHA256" ]; then
    say "warning: the running kernel's config (sha256 $sum) is not the one these modules were built against ($LK_CONFIG_SHA256); they may misbehave"
  fi
fi
[ "$failed" = 0 ] || exit 1

ours=" $(cut -f1 "$here/modules" | tr '\n' ' ')"
loaded() { grep -q "^$1 " /proc/modules; }
# Only the files built with this image: each one's digest is checked before any is loaded,
# so a layer or a bind mount over this dir cannot slip another .ko in.
while IFS="	" read -r name file sum deps; do
  [ -n "$name" ] || continue
  now=$(sha256sum "$here/root/lib/modules/$LK_RELEASE/$file" 2>/dev/null | cut -d' ' -f1)
  if [ "$now" != "$sum" ]; then
    fail "$file is not the file this image was built with (sha256 $(echo "${now:-missing}" | cut -c1-12), built $(echo "$sum" | cut -c1-12)): nothing loaded; rebuild or pull the image again"
    break
  fi
done < "$here/modules"
[ "$failed" = 0 ] || exit 1

while IFS="	" read -r name file sum deps; do
  [ -n "$name" ] || continue
  ko="$here/root/lib/modules/$LK_RELEASE/$file"
  if loaded "$name"; then
    say "$name is already loaded"
    continue
  fi
  if [ -d "/sys/module/$name" ]; then
    say "$name is built into the kernel"
    continue
  fi
  for dep in $(echo "$deps" | tr ',' ' '); do
    dep=$(echo "$dep" | tr '-' '_')
    case "$ours" in *" $dep "*) continue ;; esac
    loaded "$dep" || [ -d "/sys/module/$dep" ] || modprobe "$dep" 2>/dev/null || \
      fail "$name needs the kernel's module $dep, which is not loaded (load it first: modprobe $dep)"
  done
  [ "$failed" = 0 ] || break
  if out=$(insmod "$ko" 2>&1); then
    say "loaded $name"
  else
    why=$(dmesg 2>/dev/null | grep -E "(^|\] )$name: " | tail -n 1 | sed 's/^\[[^]]*\] //')
    fail "loading $name failed: ${why:-$out}"
    break
  fi
done < "$here/modules"
[ "$failed" = 0 ] || exit 1
[ "$#" -gt 0 ] && exec "$@"
exit 0
