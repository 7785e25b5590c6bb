#!/bin/sh
# lkbuild's target capture: what a module must match in the running kernel, read from the
# kernel itself. Plain POSIX sh with busybox-level tools, so the same script runs in a
# container on any engine, inside a test VM, or on any Linux host by hand.
#
#   sh capture.sh DIR    one file per fact in DIR (read it with `inv detect --from-dir DIR`)
#   sh capture.sh        the same facts on stdout, each between begin/end lines
#
# Nothing here changes the system: it only reads /proc, /sys, /lib/modules and /etc.
out=${1:-}
if [ -n "$out" ]; then
  mkdir -p "$out" || exit 1
fi

# emit NAME: stdin becomes the fact NAME.
emit() {
  if [ -n "$out" ]; then
    cat > "$out/$1"
  else
    echo "lkbuild-capture-begin $1"
    cat
    echo
    echo "lkbuild-capture-end $1"
  fi
}

echo 1 | emit format
uname -r | emit release
uname -m | emit machine
uname -v | emit build
[ -r /proc/version ] && emit proc-version < /proc/version

if [ -r /proc/config.gz ]; then
  if [ -n "$out" ]; then
    cat /proc/config.gz > "$out/config.gz"
  else
    # Text only on a console: base64, with its digest to prove it arrived whole.
    base64 < /proc/config.gz | emit config.gz.b64
    sha256sum < /proc/config.gz | cut -d' ' -f1 | emit config.gz.sha256
  fi
fi

# The vermagic of one of the kernel's own modules, when it has any.
mods=/lib/modules/$(uname -r)
if [ -d "$mods" ]; then
  ko=$(find "$mods" -name '*.ko' -type f 2>/dev/null | head -n 1)
  if [ -n "$ko" ]; then
    tr '\000' '\n' < "$ko" | grep '^vermagic=' | head -n 1 | sed 's/^vermagic=//' | emit vermagic
  fi
fi

for f in /sys/module/module/parameters/sig_enforce:sig-enforce \
         /sys/kernel/security/lockdown:lockdown \
         /proc/sys/kernel/modules_disabled:modules-disabled \
         /proc/sys/kernel/tainted:tainted; do
  path=${f%%:*}
  [ -r "$path" ] && emit "${f##*:}" < "$path"
done

# Docker Desktop's VM describes itself in /etc/linuxkit.yml: seen directly inside the VM,
# or as /proc/1/root/... from a privileged container sharing the VM's pid namespace.
for yml in /etc/linuxkit.yml /proc/1/root/etc/linuxkit.yml; do
  if [ -r "$yml" ]; then
    emit linuxkit.yml < "$yml"
    break
  fi
done
exit 0
