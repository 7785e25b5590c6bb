#!/bin/sh
# Compile in a persistent out-of-tree build dir (a BuildKit cache mount), so a rebuild after
# a config change or a new patch recompiles only what changed, then package the linuxkit
# image layout into OUT/image and the facts lkbuild labels it with into OUT/facts.
# usage: compile.sh CACHE KEY SOURCE_KEY SOURCE_DIR PATCH_DIR OUT
set -eu
cache=$1 key=$2 source_key=$3 src=$4 patches=$5 out=$6
build="$cache/kbuild/$key"
mkdir -p "$build" "$out/image" "$out/facts"
exec 9>"$build.lock"
flock 9
/lkbuild/source.sh "$cache" "$key" "$source_key" "$src" "$patches"
# Packaging works in the cache mount: the step's own root may be a slow overlay (FUSE on
# some engines), so only the finished files are written there.
pkg="$cache/pkg/$key"
rm -rf "$pkg"; mkdir -p "$pkg"

make_args="ARCH=$KARCH CROSS_COMPILE=$CROSS_COMPILE"
[ -n "${LOCALVERSION:-}" ] && make_args="$make_args LOCALVERSION=$LOCALVERSION"
if [ -n "${RANDSTRUCT_SEED:-}" ]; then
  # The target's seed instead of a random one. kbuild regenerates a seed file placed by
  # hand (if_changed), so its generator is replaced for every make below; the command is
  # the same for every seed, so a seed file holding another one is removed first.
  make_args="$make_args gen-randstruct-seed=/lkbuild/randstruct-seed.sh"
  seed_file="$build/scripts/basic/randstruct.seed"
  [ "$(cat "$seed_file" 2>/dev/null)" = "$RANDSTRUCT_SEED" ] || rm -f "$seed_file"
fi
cd "$cache/src/$key"
# The config step's output is final for this source and compiler (olddefconfig made it), so
# make's own syncconfig takes it as is. It is replaced only when it changed, so an unchanged
# one does not look new to make.
cmp -s /kconfig/out/config "$build/.config" || cp /kconfig/out/config "$build/.config"
# The UAPI headers depend on the source, its patches and the arch, not on the config: made
# once (8 s of a small config's 90 on 2 cores) and kept beside the trees for every build of
# them in any cache scope.
uapi="$cache/uapi/$source_key-$KARCH.tar"
goals="all"
[ -f "$uapi" ] || goals="all headers"

jobs=$(/lkbuild/jobs.sh "${MAKE_JOBS:-$(getconf _NPROCESSORS_ONLN)}" "${JOBS_AUTO:-0}" \
  "${JOBS_RESERVE_MB:-2048}" "${JOBS_PER_JOB_MB:-1536}")
printf '%s\n' "$jobs" > "$out/facts/jobs"
echo "lkbuild: make -j$jobs $make_args in $build"
/lkbuild/unfinished.sh start "$build"
# A build dir that holds objects of this config, or of one close to it, is a rebuild: make
# recompiles what changed, which no earlier build's count foretells (the progress display
# says so instead of a cold build's estimate).
echo "lkbuild: $(/lkbuild/held.sh "$build")"
started=$(date +%s)
/lkbuild/peak.sh "$out/facts/peak-rss" make O="$build" $make_args -j"$jobs" $goals
echo "lkbuild: make took $(( $(date +%s) - started )) s"
# What a rebuild is measured against: how many objects a build of this config holds.
echo "lkbuild: $(find "$build" -name '*.o' | wc -l) objects in the build dir"
# The disk this build holds (its build dir and unpacked source): the next build of it is
# checked against this instead of a default.
/lkbuild/disk.sh "$build" "$cache/src/$key" > "$out/facts/disk-bytes"
/lkbuild/unfinished.sh done "$build"

release=$(make -s O="$build" $make_args kernelrelease)
img="$out/image"
cp "$build/$KIMAGE" "$img/kernel"
cp "$build/System.map" "$img/System.map"
cp "$build/.config" "$img/config"
[ "${DEBUG:-0}" = 1 ] && cp "$build/vmlinux" "$img/vmlinux"

echo "lkbuild: packaging modules"
# /kernel.tar: the modules_install tree, its build link pointing at the headers in kernel-dev.
mods="$pkg/modules"
mkdir -p "$mods/lib/modules/$release"
if grep -q '^CONFIG_MODULES=y' "$build/.config"; then
  make -s O="$build" $make_args INSTALL_MOD_PATH="$mods" INSTALL_MOD_STRIP=1 modules_install
fi
rm -f "$mods/lib/modules/$release/build" "$mods/lib/modules/$release/source"
ln -s "/usr/src/linux-headers-$release" "$mods/lib/modules/$release/build"
tar --numeric-owner -C "$mods" -cf "$img/kernel.tar" lib

# /kernel-headers.tar: the UAPI headers.
if [ "$goals" = all ] && ! cp "$uapi" "$img/kernel-headers.tar" 2>/dev/null; then
  # A prune removed them while make ran: they are made here after all.
  /lkbuild/unfinished.sh start "$build"
  make -s O="$build" $make_args -j"$jobs" headers
  /lkbuild/unfinished.sh done "$build"
  goals="all headers"
fi
if [ "$goals" != all ]; then
  tar --numeric-owner --exclude=".*" -C "$build" -cf "$img/kernel-headers.tar" usr/include
  mkdir -p "$cache/uapi"
  tmp=$(mktemp "$uapi.XXXXXX")
  cp "$img/kernel-headers.tar" "$tmp" && mv -f "$tmp" "$uapi"
fi

echo "lkbuild: packaging kernel-dev"
# /kernel-dev.tar: one flat tree to build modules against (make -C DIR M=...): the source's
# Makefiles, Kconfig, include/ and scripts/, with the build's generated files and host tools.
# Taken straight from both trees into the archive under its prefix, not copied first.
dev="usr/src/linux-headers-$release"
arch_dirs="arch/$SRCARCH/include"
[ -d "arch/$SRCARCH/tools" ] && arch_dirs="$arch_dirs arch/$SRCARCH/tools"
find . \( -path ./include -o -path ./scripts -o -path "./arch/$SRCARCH/include" \
      -o -path "./arch/$SRCARCH/tools" \) -prune \
  -o \( -name 'Makefile*' -o -name 'Kconfig*' -o -name 'Kbuild*' -o -name '*.lds' \) -type f \
  -print | sed 's,^\./,,' > "$pkg/dev-source"
prefix="s,^,$dev/,S"
tar --numeric-owner --transform "$prefix" -cf "$img/kernel-dev.tar" -T "$pkg/dev-source" \
  include scripts $arch_dirs
cd "$build"
built=".config include scripts arch/$SRCARCH/include"
[ -f Module.symvers ] && built="$built Module.symvers"
for f in tools/objtool/objtool tools/bpf/resolve_btfids/resolve_btfids; do
  [ -x "$f" ] && built="$built $f"
done
tar --numeric-owner --transform "$prefix" -rf "$img/kernel-dev.tar" $built

echo "lkbuild: collecting facts"
# Facts: what modules must match.
vermagic=""
if [ -f kernel/module/main.o ]; then
  vermagic=$(strings -a kernel/module/main.o | grep -m 1 "^$release " || true)
fi
cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' .config)
printf '%s\n' "$release" > "$out/facts/release"
printf '%s\n' "$vermagic" > "$out/facts/vermagic"
printf '%s\n' "$cc_text" > "$out/facts/compiler"
sha256sum .config | cut -d' ' -f1 > "$out/facts/config-sha256"
cat > "$img/kernel-source-info" <<INFO
KERNEL_VERSION=$KERNEL_VERSION
KERNEL_RELEASE=$release
SOURCE_SHA256=$SOURCE_SHA256
INFO
printf '%s\n' "$BUILD_IMAGE" > "$img/kernel-builder"
rm -rf "$pkg"
echo "lkbuild: built $release"
