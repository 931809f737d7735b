"""Client/server mode: first scan and rescan of a 100+ MiB registry image, standalone
vs against a ``trivy server`` (same binary, fixture DB), bare trivy vs the core.

Run from the repo root: ``.venv/bin/python bench/bench_server.py [--size-mib N] [--json PATH]``.

Standalone, the core keeps trivy's layer cache in memory (``--cache-backend
memory``: concurrent scans never meet on the cache's file lock), so a rescan
pulls and analyses every layer again. Against the server, its layer cache
(keyed by layer digest) answers the rescan: the client asks which layers are
missing, gets none, and pulls nothing but the manifest and config. Each
measured pair (bare, core) gets its own image (another data layer) and, in
server mode, its own fresh server, so no run is helped by another's cache.
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
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config_cached  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.registry import Credentials, parse_image_reference  # noqa: E402
from scanner_core.trivy import ScanTarget, ServerConnection, Trivy, TrivyOptions, child_environment  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.big_image import build_big_image  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402
from tests.support.trivy_server import TrivyServer  # noqa: E402

TOKEN = "bench-server-token"
SCANNER_ID = "5e7e7000-0000-4000-8000-000000000001"


def say(text: str) -> None:
    print(f"[server] {text}", file=sys.stderr, flush=True)


def bare(trivy: Path, reference: str, cache: Path, registry: Registry, server: TrivyServer | None, work: Path) -> float:
    """``trivy image`` with exactly the core's flags, credentials and token handling."""
    options = TrivyOptions(
        cache_dir=cache, timeout_ms=600_000, skip_db_update=True, cache_backend="memory", offline_scan=True,
        insecure_registry=True, server=ServerConnection(server.url, TOKEN) if server else None,
    )  # fmt: skip
    output = work / "bare.json"
    command = Trivy(trivy).build_command(ScanTarget(image=parse_image_reference(reference)), options, output)
    with tempfile.TemporaryDirectory(dir=work) as home:
        env = child_environment(Credentials(registry.address, registry.username, registry.password), Path(home))
        if server:
            env["TRIVY_TOKEN"] = TOKEN
        started = time.perf_counter()
        completed = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"bare trivy failed: {completed.stderr[-2000:]}")
    return seconds


def core(reference: str, audit_id: str) -> float:
    scanner = Scanner(load_config_cached(), app_root=REPO_ROOT)  # per invocation, as the app
    started = time.perf_counter()
    outcome = scanner.scan(ScanRequest(audit_id=audit_id, requested_at=utc_now(), image=reference))
    seconds = time.perf_counter() - started
    if not outcome.succeeded:
        raise RuntimeError(f"core scan failed: {outcome.meta.failure_description}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=112, help="the image's data layer (default 112 MiB)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    trivy = Path(sys.prefix) / "bin" / "trivy"
    results: dict[str, Any] = {"size_mib": args.size_mib}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        work = Path(tmp)
        build_trivy_db(work / "cache", SAMPLE_ADVISORIES)
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            azurite.create_container("audits")
            config = work / "scanner.yaml"
            config.write_text(json.dumps({"registries": [{"address": registry.address, "username": registry.username,
                                                          "password": registry.password, "insecure": True}]}))  # fmt: skip
            for name in [name for name in os.environ if name.startswith(("TRIVY_", "DB_SNAPSHOT"))]:
                del os.environ[name]
            os.environ.update({
                "SCANNER_IDENTIFIER": SCANNER_ID, "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url("audits"),
                "TRIVY_CONFIG_PATH": str(config), "TRIVY_PATH": str(trivy), "TRIVY_CACHE_DIR": str(work / "cache"),
                "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true", "TRIVY_TIMEOUT": "600000",
                "DB_SNAPSHOT": "none", "LOG_FORMAT": "plain-text", "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES,
            })  # fmt: skip
            references = {}
            for label in ("standalone-bare", "standalone-core", "server-bare", "server-core"):
                say(f"building and pushing the {args.size_mib} MiB image for {label}")
                image = build_big_image(work / f"{label}.tar", size_mib=args.size_mib, seed=label,
                                        repo_tag=f"bench/{label}:1")  # fmt: skip
                registry.push_docker_archive(image.path, f"bench/{label}", "1")
                image.path.unlink()
                references[label] = f"{registry.address}/bench/{label}:1"
            results["image_bytes"] = args.size_mib * 2**20

            say("standalone: bare trivy, then the core, each a first scan and a rescan")
            ref = references["standalone-bare"]
            results["standalone_bare"] = [bare(trivy, ref, work / "cache", registry, None, work) for _ in range(2)]
            results["standalone_core"] = [core(references["standalone-core"], f"standalone-{n}") for n in range(2)]

            for label, run in (("server_bare", "server-bare"), ("server_core", "server-core")):
                say(f"client/server: {run}, against a fresh server")
                with TrivyServer(trivy, work / f"srv-{run}", work / "cache", token=TOKEN) as server:
                    if run == "server-bare":
                        results[label] = [bare(trivy, references[run], work / "client-cache", registry, server, work)
                                          for _ in range(2)]  # fmt: skip
                    else:
                        os.environ.update({"TRIVY_SERVER": server.url, "TRIVY_SERVER_TOKEN": TOKEN})
                        results[label] = [core(references[run], f"server-{n}") for n in range(2)]
                        for name in ("TRIVY_SERVER", "TRIVY_SERVER_TOKEN"):
                            del os.environ[name]
    for key in ("standalone_bare", "standalone_core", "server_bare", "server_core"):
        first, rescan = results[key]
        print(f"{key:<16} first scan {first:6.2f} s   rescan {rescan:6.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
