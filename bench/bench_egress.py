"""The egress proxy's cost (issue 23): a registry image scanned through it vs directly.

Run from the repo root: ``.venv/bin/python bench/bench_egress.py [--size-mib N] [--rounds N] [--json PATH]``.

The same image in the same ``docker-registry`` (plain HTTP, htpasswd), scanned by the core
(``Scanner.scan``) alternately as ``registry.bench:<port>/...`` (a name the guard's resolver hook
maps to 127.0.0.1, so trivy goes through the egress proxy, which resolves, connects and relays
every byte) and as ``127.0.0.1:<port>/...`` (a loopback address, which Go never proxies: the
direct path, as with ``EGRESS_GUARD=false``). trivy's layer cache is in memory, so every scan
pulls the whole image. Prints the median wall time of each, the ratio, and the proxy's share.
Nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

from bench.bench_scan import build_fixture, scanner_environment, trivy_executable  # noqa: E402
from bench.bench_server import core  # noqa: E402  - Scanner.scan of one reference, timed
from scanner_core.registry import use_resolver  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.big_image import build_big_image  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES  # noqa: E402
from tests.support.registry import Registry  # noqa: E402

NAME = "registry.bench"


def say(text: str) -> None:
    print(f"[egress] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=112)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-egress-") as scratch:
        work = Path(scratch)
        fixture = build_fixture(work / "fixture", SAMPLE_PACKAGES, SAMPLE_ADVISORIES)
        big = build_big_image(work / "big.tar", size_mib=args.size_mib)
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            small_digest = registry.push_docker_archive(fixture.tar, "bench/small", "1.0")
            big_digest = registry.push_docker_archive(big.path, "bench/big", "1.0")
            port = registry.address.rsplit(":", 1)[1]
            azurite.create_container("egress")
            sas = azurite.container_sas_url("egress")
            config = work / "scanner.yaml"
            os.environ.update(scanner_environment(sas, trivy_executable(), fixture, config))
            os.environ["ALLOWED_REGISTRIES"] = f"{NAME},127.0.0.1"
            os.environ["SCAN_DEDUP"] = "false"  # every round runs trivy
            entries = [f"  - {{address: '{host}:{port}', username: {registry.username}, "
                       f"password: {registry.password}, insecure: true}}" for host in (NAME, "127.0.0.1")]
            config.write_text("heartbeat-period: 60\nregistries:\n" + "\n".join(entries) + "\n", encoding="utf-8")

            def resolver(host: str) -> list[str]:
                if host == NAME:
                    return ["127.0.0.1"]
                raise socket.gaierror(socket.EAI_NONAME, host)

            use_resolver(resolver)
            results: dict[str, dict[str, float]] = {}
            for label, repository, digest in (("small", "bench/small", small_digest),
                                              ("big", "bench/big", big_digest)):  # fmt: skip
                times: dict[str, list[float]] = {"proxy": [], "direct": []}
                for round_ in range(args.rounds + 1):  # the first round warms both up
                    for path, host in (("proxy", NAME), ("direct", "127.0.0.1")):
                        seconds = core(f"{host}:{port}/{repository}@{digest}", f"{label}-{path}-{round_}")
                        if round_:
                            times[path].append(seconds)
                proxy, direct = statistics.median(times["proxy"]), statistics.median(times["direct"])
                results[label] = {"proxy_s": proxy, "direct_s": direct, "ratio": proxy / direct}
                say(f"{label}: through the proxy {proxy:.3f} s, direct {direct:.3f} s (median of {args.rounds})")
            use_resolver(None)
    size = f"{args.size_mib} MiB"
    print("| image | direct (loopback, no proxy) | through the egress proxy | ratio |")
    print("|---|---:|---:|---:|")
    for label, figures in results.items():
        name = "sample (small)" if label == "small" else size
        print(f"| {name} | {figures['direct_s']:.3f} s | {figures['proxy_s']:.3f} s | {figures['ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
