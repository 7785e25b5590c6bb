"""lkbuild: build LinuxKit kernels and kernel modules in containers, locally or over SSH."""
