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
# Replace the config only when it changed, so an unchanged one does not look new to make.
cmp -s /kconfig/out/config "$build/.config" || cp /kconfig/out/config "$build/.config"

jobs=$(/lkbuild/jobs.sh "${MAKE_JOBS:-$(getconf _NPROCESSORS_ONLN)}" "${JOBS_AUTO:-0}" \
  "${JOBS_RESERVE_MB:-2048}" "${JOBS_PER_JOB_MB:-1536}")
printf '%s\n' "$jobs" > "$out/facts/jobs"
echo "lkbuild: make -j$jobs $make_args in $build"
/lkbuild/unfinished.sh start "$build"
make -s O="$build" $make_args olddefconfig
# The UAPI headers are made in the same parallel make, and incrementally, in the build dir.
started=$(date +%s)
/lkbuild/peak.sh "$out/facts/peak-rss" make O="$build" $make_args -j"$jobs" all headers
echo "lkbuild: make took $(( $(date +%s) - started )) s"
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
tar --numeric-owner --exclude=".*" -C "$build" -cf "$img/kernel-headers.tar" usr/include

echo "lkbuild: packaging kernel-dev"
# /kernel-dev.tar: one flat tree to build modules against (make -C DIR M=...): the source's
# Makefiles, Kconfig, include/ and scripts/, with the build's generated files and host tools.
dev="$pkg/dev"
devsrc="usr/src/linux-headers-$release"
mkdir -p "$dev/$devsrc"
find . \
  \( -name 'Makefile*' -o -name 'Kconfig*' -o -name 'Kbuild*' -o -name '*.lds' \) -type f -print \
  | cpio -pdm --quiet "$dev/$devsrc"
cp -a include scripts "$dev/$devsrc/"
mkdir -p "$dev/$devsrc/arch/$SRCARCH"
cp -a "arch/$SRCARCH/include" "$dev/$devsrc/arch/$SRCARCH/"
[ -d "arch/$SRCARCH/tools" ] && cp -a "arch/$SRCARCH/tools" "$dev/$devsrc/arch/$SRCARCH/"
cd "$build"
cp -a .config Module.symvers "$dev/$devsrc/" 2>/dev/null || cp -a .config "$dev/$devsrc/"
cp -a include scripts "$dev/$devsrc/"
cp -a "arch/$SRCARCH/include" "$dev/$devsrc/arch/$SRCARCH/"
for f in tools/objtool/objtool tools/bpf/resolve_btfids/resolve_btfids; do
  [ -x "$f" ] && { mkdir -p "$dev/$devsrc/$(dirname "$f")"; cp -a "$f" "$dev/$devsrc/$f"; }
done
tar --numeric-owner -C "$dev" -cf "$img/kernel-dev.tar" "$devsrc"

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
