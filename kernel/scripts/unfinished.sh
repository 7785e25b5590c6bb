#!/bin/sh
# Keep a persistent build dir sound across a make that never finished. BuildKit ends a
# cancelled step (Ctrl-C, a lost client, the engine stopping) with SIGKILL, so make cannot
# delete what it was writing: an object or a .s cut short keeps a newer time than its
# sources and its old .cmd, and every later make takes it as up to date and fails far away
# (as in "can't resolve 0 - PTREGS_SIZE" from an empty asm-offsets.s).
#
# `start` runs before the makes: if the mark of an unfinished make is there, every file
# written since that mark and not followed by its .cmd (kbuild writes a target's .cmd after
# the target, so a target newer than its .cmd was cut short or never confirmed) is removed,
# and so is every .cmd cut short itself; make then remakes those and nothing else. `done`
# removes the mark once the makes have succeeded. The caller holds the key's lock.
# usage: unfinished.sh start|done BUILD_DIR
set -eu
what=$1 build=$2
mark="$build/.lkbuild-unfinished"
case $what in
done) rm -f "$mark"; exit 0 ;;
start) ;;
*) echo "usage: unfinished.sh start|done BUILD_DIR" >&2; exit 2 ;;
esac
if [ -f "$mark" ]; then
  # perl is in every build image (toolchain.sh), and Time::HiRes gives sub-second times.
  perl -e '
use strict; use warnings; use File::Find; use Time::HiRes ();
my ($build, $mark) = @ARGV;
my $since = (Time::HiRes::stat($mark))[9];
sub mtime { my @s = Time::HiRes::stat($_[0]); return @s ? $s[9] : undef }
sub complete {  # every line ended, and fixdep s list closed by its "$(deps_TARGET):" rule
  my ($path) = @_;
  open(my $fh, "<", $path) or return 0;
  local $/; my $text = <$fh>; close $fh;
  return 0 if !defined $text || $text !~ /\n\z/;
  return 1 if $text !~ /^deps_(\S+) :=/m;
  my $target = quotemeta($1);
  return $text =~ /^\$\(deps_$target\):$/m ? 1 : 0;
}
my @gone;
find({ no_chdir => 1, wanted => sub {
  my $path = $File::Find::name;
  return if $path eq $mark || !-f $path;
  my $m = mtime($path);
  return unless defined $m && $m > $since;
  my ($dir, $name) = $path =~ m{^(.*)/([^/]+)$};
  if ($name =~ /^\.(.+)\.cmd$/) {
    push @gone, $path, "$dir/$1" unless complete($path);
  } else {
    my $cmd = mtime("$dir/.$name.cmd");
    push @gone, $path if defined $cmd && $m > $cmd;
  }
}}, $build);
my @removed = sort map { substr($_, length($build) + 1) } grep { unlink $_ } @gone;
my @named = @removed > 8 ? (@removed[0 .. 7], "and " . (@removed - 8) . " more") : @removed;
print "lkbuild: the last make in this build dir did not finish; removed ", scalar(@removed),
  (@removed == 1 ? " file" : " files"), " it may have left half-written",
  (@named ? ": " . join(", ", @named) : ""), "\n";
' "$build" "$mark"
fi
rm -f "$mark"
: > "$mark"
