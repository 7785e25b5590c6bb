"""Remote build benchmark: lkbuild's SSH path against the bare tools, side by side in one run.

Prints, and writes as JSON:
  image transfer (docker save over lkbuild's SSH channel into the local engine, checked by ID)
    / raw `ssh cat` of the same bytes (OpenSSH's client, and the same Paramiko channel)
  where the build host's `docker save` of the -builder image spends its time: the whole image,
    its build image's layers alone, a tar of its layer dirs, the same save on this engine
  remote build total (`inv remote-build`, cold) / the same build run locally on that engine
    (`inv build` with DOCKER_HOST at it, cold)

The remote is a real sshd whose logins talk to a second dockerd (its own data root, socket and
network namespace), as in the integration tests, so every byte crosses SSH. The transfer is
measured twice: over loopback, where docker's own save and load are the limit, and through a
second sshd in a network namespace behind a veth pair shaped to --link-mbit, as a build host
across a network is.

usage: python bench/remote.py [--quick] [--source TARBALL] [--link-mbit N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BUILD_IMAGE, ROOT, SOURCE, UNAME, lkbuild, machine, median, write
from recipes import engine as enginemod, ssh
from tests.integration.daemons import DockerEngine, Link, SSHServer
from tests.integration.kernels import remove_images

RUN = uuid.uuid4().hex[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small config (minutes)")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--arch", default="amd64")
    parser.add_argument("--out", default="")
    parser.add_argument("--link-mbit", default="1000,100",
                        help="rates of the shaped links to the build host (comma-separated)")
    parser.add_argument("--save-breakdown", default="", metavar="IMAGE",
                        help="only where docker save spends its time, for a -builder image "
                             "of this engine on a second engine (a minute)")
    args = parser.parse_args()
    if args.save_breakdown:
        breakdown_only(args.save_breakdown, args.out)
        return
    build_flags = ["--source", args.source, "--arch", args.arch]
    if args.quick:
        build_flags += ["--config", str(ROOT / "tests" / "data" /
                                        f"small-{UNAME[args.arch]}.config")]
    work = Path(tempfile.mkdtemp(prefix="lkbuild-bench-"))
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="lkb-", dir="/tmp")))
    server = None
    try:
        engine.start()
        engine.load_from_host(BUILD_IMAGE)
        server = SSHServer(work / "sshd", engine.host)
        server.start()
        known = work / "known_hosts"
        known.write_text(server.known_hosts_line())
        cache = work / "cache"
        base = {"LKBUILD_CACHE_DIR": str(cache), "LKBUILD_ORG": f"lkbuild-bench-{RUN}"}

        remote_s, remote_out, _ = lkbuild(
            "remote-build", "--host", server.host_spec, "--identity", str(server.identity),
            "--known-hosts", str(known), *build_flags,
            env={**base, "LKBUILD_CACHE_ID": f"bench-remote-{RUN}"})
        local_s, _, _ = lkbuild(
            "build", *build_flags, "--force",
            env={**base, "LKBUILD_CACHE_ID": f"bench-local-{RUN}", "DOCKER_HOST": engine.host})

        # The transfer: the -builder image (the bigger one) back into the local engine, over
        # loopback (docker's own save and load bound it) and over a shaped link (a build host
        # across a network), each against a raw cat of the same bytes on the same path.
        ref = next(r for r in remote_out["refs"] if "-builder-" in r)
        # A rebuild that changed one layer: the -builder image with one small layer on top,
        # made on the build host's engine, under the same repository.
        changed = f"{ref.rsplit(':', 1)[0]}:one-layer-{RUN}"
        subprocess.run(["docker", "build", "-q", "-t", changed, "-"], check=True,
                       input=f"FROM {ref}\nRUN echo {RUN} > /lkbuild-bench-layer\n".encode(),
                       stdout=subprocess.DEVNULL,
                       env={**os.environ, "DOCKER_HOST": engine.host, "DOCKER_BUILDKIT": "0"})
        saved = work / "image.tar"
        subprocess.run(["docker", "save", "-o", str(saved), ref], check=True,
                       env={**os.environ, "DOCKER_HOST": engine.host})
        size = saved.stat().st_size
        paths = {"loopback": measure(server, known, ref, saved, changed)}
        rates = [int(r) for r in args.link_mbit.split(",") if r.strip()]
        for rate in rates:
            link = Link(f"lkbench-{RUN}", rate)
            link.start()
            try:
                far = SSHServer(work / f"sshd-link-{rate}", engine.host, netns=link.netns,
                                address=link.there)
                far.start()
                try:
                    far_known = work / f"known_hosts_link_{rate}"
                    far_known.write_text(far.known_hosts_line())
                    paths[f"{rate} Mbit/s link"] = measure(far, far_known, ref, saved, changed)
                finally:
                    far.stop()
            finally:
                link.stop()
        mb = size / 1e6
        saves = save_breakdown(engine, ref)
        results: dict[str, Any] = {
            "inputs": {**machine(), "source": args.source, "arch": args.arch,
                       "config": "small" if args.quick else "series",
                       "image": ref, "image_mb": round(mb, 1), "link_mbit": rates},
            "transfer": {
                name: {"transfer_s": round(t["fetch"], 2),
                       "transfer_mb_sent": round(t["fetch_bytes"] / 1e6, 1),
                       "every_layer_s": round(t["fetch_all"], 2),
                       "every_layer_mb_sent": round(t["fetch_all_bytes"] / 1e6, 1),
                       "openssh_cat_s": round(t["openssh"], 2),
                       "channel_cat_s": round(t["channel"], 2),
                       "transfer_vs_openssh_cat": round(t["openssh"] / t["fetch"], 3),
                       "every_layer_vs_openssh_cat": round(t["openssh"] / t["fetch_all"], 3),
                       "transfer_vs_channel_cat": round(t["channel"] / t["fetch"], 3),
                       "hand_pipeline_s": round(t["hand"], 2),
                       "docker_save_only_s": round(t["save_only"], 2),
                       "cold_vs_hand": round(t["fetch_all"] / t["hand"], 3),
                       "one_layer_s": round(t["one_layer"], 2),
                       "one_layer_mb_sent": round(t["one_layer_bytes"] / 1e6, 1),
                       "one_layer_hand_s": round(t["one_layer_hand"], 2),
                       "one_layer_vs_hand": round(t["one_layer"] / t["one_layer_hand"], 3)}
                for name, t in paths.items()},
            "docker_save": saves,
            "remote_build_s": round(remote_s, 1),
            "local_build_on_that_engine_s": round(local_s, 1),
            "remote_vs_local_build": round(remote_s / local_s, 3),
        }
    finally:
        if server is not None:
            server.stop()
        remove_images(f"lkbuild-bench-{RUN}")
        engine.stop()
        shutil.rmtree(engine.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    path = write("remote", results, args.out)
    for name, t in results["transfer"].items():
        print(f"cold image transfer / ssh docker save | docker load, {name}: "
              f"{t['cold_vs_hand']} ({t['every_layer_s']} s against {t['hand_pipeline_s']} s; "
              f"goal <= 1.0); docker save alone on the host: {t['docker_save_only_s']} s")
        print(f"one changed layer / ssh docker save | docker load, {name}: "
              f"{t['one_layer_vs_hand']} ({t['one_layer_s']} s, {t['one_layer_mb_sent']} MB "
              f"sent, against {t['one_layer_hand_s']} s; goal <= 0.3)")
        print(f"image transfer / raw ssh cat (OpenSSH), {name}: "
              f"{t['transfer_vs_openssh_cat']} ({t['transfer_mb_sent']} MB sent, "
              f"{t['transfer_s']} s; goal >= 0.8); with every layer: "
              f"{t['every_layer_vs_openssh_cat']} ({t['every_layer_s']} s); raw cat "
              f"{t['openssh_cat_s']} s")
    d = results["docker_save"]
    print(f"docker save on the build host ({d['host_driver']}): the -builder image "
          f"({d['layers']} layers) {d['builder_s']} s, its build image's {d['base_layers']} "
          f"layers alone {d['base_s']} s, tar of its layer dirs {d['layer_dirs_tar_s']} s; "
          f"on this engine ({d['local_driver']}) {d['local_builder_s']} s")
    print(f"remote build / local build on that engine: {results['remote_vs_local_build']}")
    print(f"written to {path}")


def timed(argv: list[str], env: dict[str, str] | None = None, runs: int = 3) -> float:
    """Median seconds of `argv` (output discarded) over `runs` runs."""
    seconds = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, env={**os.environ, **(env or {})}, check=True,
                       stdout=subprocess.DEVNULL)
        seconds.append(time.monotonic() - started)
    return round(median(seconds), 2)


def save_breakdown(engine: DockerEngine, ref: str) -> dict[str, Any]:
    """Where the build host's `docker save` of the -builder image spends its time: the whole
    image, its build image alone (the layers lkbuild does not send), a plain tar of the
    image's layer dirs in the engine's storage (reading the same bytes, no export), and the
    same save on this machine's own engine (its storage driver)."""
    host = {"DOCKER_HOST": engine.host}
    found = json.loads(engine.docker("image", "inspect", ref, check=True).stdout)[0]
    base = json.loads(engine.docker("image", "inspect", BUILD_IMAGE, check=True).stdout)[0]
    graph = found["GraphDriver"]
    dirs = [d for key in ("UpperDir", "LowerDir")
            for d in str(graph["Data"].get(key, "")).split(":") if d]
    tar = ["sh", "-c", " && ".join(f"tar -cf - -C {shlex.quote(d)} . | cat > /dev/null"
                                   for d in dirs)]
    return {"host_driver": graph["Name"], "local_driver": machine()["storage_driver"],
            "layers": len(found["RootFS"]["Layers"]), "base_layers": len(base["RootFS"]["Layers"]),
            "builder_s": timed(["docker", "save", ref], host),
            "base_s": timed(["docker", "save", BUILD_IMAGE], host),
            "layer_dirs_tar_s": timed(tar),
            "local_builder_s": timed(["docker", "save", ref])}


def breakdown_only(ref: str, out: str) -> None:
    """save_breakdown for an image this engine has, on a second engine as the build host."""
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="lkb-", dir="/tmp")))
    try:
        engine.start()
        for image in (BUILD_IMAGE, ref):
            engine.load_from_host(image)
        results = {"inputs": {**machine(), "image": ref},
                   "docker_save": save_breakdown(engine, ref)}
    finally:
        engine.stop()
        shutil.rmtree(engine.root, ignore_errors=True)
    print(json.dumps(results["docker_save"]))
    print(f"written to {write('remote-save', results, out)}")


def hand_pipeline(ssh_cmd: list[str], ref: str) -> None:
    """`ssh HOST docker save REF | docker load`, as a user would run it."""
    save = subprocess.Popen([*ssh_cmd, f"docker save {ref}"], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "load", "-q"], stdin=save.stdout,
                          stdout=subprocess.DEVNULL, check=False)
    if save.stdout is not None:
        save.stdout.close()
    if save.wait() != 0 or load.returncode != 0:
        raise SystemExit(f"ssh docker save {ref} | docker load failed")


def measure(server: SSHServer, known: Path, ref: str, saved: Path, changed: str
            ) -> dict[str, float]:
    """Seconds (and bytes over the link) for lkbuild's transfer of `ref` into the local
    engine, removed first: as a remote build does it (the layers of the build image, which
    this engine has, are not sent) and with every layer (cold); what a user types instead
    (ssh docker save | docker load) and the host's docker save alone; then `changed`, one
    layer on top of `ref` (a rebuild), both ways; and a raw cat of the whole saved image
    through OpenSSH and through the same Paramiko channel."""
    local = enginemod.connect()
    remote = ssh.connect(server.host_spec, identity=str(server.identity), known_hosts=str(known))
    real, seen = remote.recv_stream, [0]

    def counting(cmd: str, sink: Any) -> int:
        def count(data: bytes) -> None:
            seen[0] += len(data)
            sink(data)
        return real(cmd, count)

    remote.recv_stream = counting  # type: ignore[method-assign]
    out: dict[str, float] = {}
    try:
        for name, scratch in (("fetch", "/root/.cache/lkbuild/transfer"), ("fetch_all", "")):
            found = local.image(ref)
            if found is not None:
                local.client.api.remove_image(found["Id"], force=True)
            seen[0] = 0
            started = time.monotonic()
            ssh.fetch_image(remote, ref, local, scratch, [BUILD_IMAGE])
            out[name] = time.monotonic() - started
            out[f"{name}_bytes"] = seen[0]
        ssh_cmd = ["ssh", "-i", str(server.identity), "-p", str(server.port), "-o",
                   f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                   f"root@{server.address}"]
        # What a user types instead: the whole image through OpenSSH into docker load.
        found = local.image(ref)
        if found is not None:
            local.client.api.remove_image(found["Id"], force=True)
        started = time.monotonic()
        hand_pipeline(ssh_cmd, ref)
        out["hand"] = time.monotonic() - started
        # The engine's export alone, on the host: the floor under both.
        started = time.monotonic()
        subprocess.run([*ssh_cmd, f"docker save {ref} > /dev/null"], check=True)
        out["save_only"] = time.monotonic() - started
        started = time.monotonic()
        subprocess.run([*ssh_cmd, f"cat {saved}"], stdout=subprocess.DEVNULL, check=True)
        out["openssh"] = time.monotonic() - started
        # The rebuild: `ref` is here (the hand pipeline just loaded it); one layer is new.
        for name, scratch in (("one_layer", "/root/.cache/lkbuild/transfer"),):
            seen[0] = 0
            started = time.monotonic()
            ssh.fetch_image(remote, changed, local, scratch, [BUILD_IMAGE])
            out[name] = time.monotonic() - started
            out[f"{name}_bytes"] = seen[0]
        local.client.api.remove_image(changed, force=True)
        started = time.monotonic()
        hand_pipeline(ssh_cmd, changed)
        out["one_layer_hand"] = time.monotonic() - started
        local.client.api.remove_image(changed, force=True)
        started = time.monotonic()
        real(f"cat {saved}", lambda data: None)
        out["channel"] = time.monotonic() - started
    finally:
        remote.close()
        local.close()
    return out


if __name__ == "__main__":
    main()
