"""The admission budget (issue 25, item 4): an ``AdmissionReview`` of a Pod with 10 images.

Run from the repo root: ``.venv/bin/python bench/bench_admission.py [--requests N] [--json OUT]``
(``--json``: the figures for ``bench/summary.py``, as ``bench/run_all.sh`` runs it).

Against Azurite and a real registry: 10 distinct images are pushed and scanned by the real
trivy with a policy that approves them (auto-approved), then a Pod that runs all 10 (by
digest: no registry call) is reviewed through the function's body (``http_api.serve``: the
context from the app settings, the handler, the answer), one at a time and at 50 concurrent
requests. Beside it, the old path a webhook's glue code takes: 10 ``GET /verdict`` in a row
for the same images; and the same Pod by tag (one registry request per tag per TTL, then
cached). p50 and p99 beside the goals (p50 <= 50 ms, p99 <= 200 ms); nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from urllib.parse import quote  # noqa: E402

import azure.functions as func  # noqa: E402
import yaml  # noqa: E402

from scanner_core.audit import ScanRequest, utc_now  # noqa: E402
from scanner_core.config import load_config  # noqa: E402
from scanner_core.core import Scanner  # noqa: E402
from scanner_core.functions import APP_ROOT, admission_review, image_verdict, serve, serve_admission  # noqa: E402
from tests.support.admission import admission_review as review_of, body, pod_manifest  # noqa: E402
from tests.support.azurite import Azurite  # noqa: E402
from tests.support.images import SAMPLE_ADVISORIES  # noqa: E402
from tests.support.monitor import TriggerQueue, push_distinct_image  # noqa: E402
from tests.support.registry import LOOPBACK_REGISTRIES, Registry  # noqa: E402
from tests.support.trivy_db import build_trivy_db  # noqa: E402

SCANNER_ID = "be5c4000-0000-4000-8000-00000000ad01"
GOAL_P50_MS, GOAL_P99_MS = 50.0, 200.0
IMAGES = 10
CONCURRENCY = 50


def request(document: dict) -> func.HttpRequest:
    return func.HttpRequest(method="POST", url="http://localhost:7071/api/admission/review",
                            headers={"content-type": "application/json"}, body=body(document))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def line(name: str, values: list[float]) -> str:
    p50, p99 = statistics.median(values), percentile(values, 0.99)
    return (f"{name:<34} n={len(values):<4} p50 {p50:7.1f} ms (goal <= {GOAL_P50_MS:.0f})  "
            f"p99 {p99:7.1f} ms (goal <= {GOAL_P99_MS:.0f})  {'OK' if p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS else 'OVER'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write p50/p99 per figure and the goals here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        work = Path(tmp)
        with Azurite(work / "azurite") as azurite, Registry(work / "registry") as registry:
            azurite.create_container("audits")
            cache = work / "cache"
            build_trivy_db(cache, SAMPLE_ADVISORIES)
            config_path = work / "scanner.yaml"
            config_path.write_text(yaml.safe_dump({"registries": [{
                "address": registry.address, "username": registry.username, "password": registry.password,
                "insecure": True}]}))
            (policy := work / "policy.yaml").write_text("default: approve\n")
            queue = TriggerQueue(azurite.connection_string)
            for name in [n for n in os.environ if n.startswith(("TRIVY_", "ADMISSION_"))]:
                del os.environ[name]
            os.environ.update({
                "SCANNER_IDENTIFIER": SCANNER_ID, "AZ_BLOB_STORAGE_SAS": azurite.container_sas_url("audits"),
                "TRIVY_CONFIG_PATH": str(config_path), "TRIVY_PATH": str(Path(sys.prefix) / "bin" / "trivy"),
                "TRIVY_CACHE_DIR": str(cache), "TRIVY_SKIP_DB_UPDATE": "true", "TRIVY_OFFLINE_SCAN": "true",
                "LOG_FORMAT": "json", "AzureWebJobsStorage": azurite.connection_string, "POLICY_PATH": str(policy),
                "ALLOWED_REGISTRIES": LOOPBACK_REGISTRIES, "SCAN_QUEUE_NAME": queue.name,
                "KEV_FEED_URL": "", "EPSS_FEED_URL": "",
            })
            logging.disable(logging.WARNING)

            started = time.perf_counter()
            pinned, tagged = [], []
            for n in range(IMAGES):
                digest = push_distinct_image(registry, work, f"bench/app{n}", "1.0")
                image = f"{registry.address}/bench/app{n}"
                outcome = Scanner(load_config()).scan(ScanRequest(
                    audit_id=f"adm-{n}", requested_at=utc_now(), image=f"{image}@{digest}", trigger="request"))
                assert outcome.succeeded, outcome.meta.failure_description
                pinned.append(f"{image}@{digest}")
                tagged.append(f"{image}:1.0")
            print(f"set-up: {IMAGES} images pushed and scanned in {time.perf_counter() - started:.1f} s")

            bodies = {"pinned": review_of(pod_manifest(pinned)), "tagged": review_of(pod_manifest(tagged))}

            def review(images: list[str]) -> None:  # the API server's body is built before the clock starts
                document = bodies["pinned" if images is pinned else "tagged"]
                response = serve_admission(admission_review, request(document), APP_ROOT)
                assert response.status_code == 200, response.get_body()
                assert json.loads(response.get_body())["response"]["allowed"] is True, response.get_body()

            def old_path() -> None:  # a glue webhook: one GET /verdict per image, in a row
                for reference in pinned:
                    name, digest = reference.split("@")
                    route = quote(name, safe="")
                    response = serve(image_verdict, func.HttpRequest(
                        method="GET", url=f"http://localhost:7071/api/images/{route}/verdict?digest={digest}",
                        params={"digest": digest}, route_params={"name": route}, body=b""), APP_ROOT)
                    assert json.loads(response.get_body())["allowed"] is True

            for _ in range(5):  # warm-up: imports, clients, the first tag resolution
                review(pinned)
                review(tagged)
                old_path()
            os.environ["ADMISSION_VERDICT_TTL_SECONDS"] = "0"  # every review asks find_verdict for each image
            uncached = [timed(lambda: review(pinned)) for _ in range(max(20, args.requests // 5))]
            with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                uncached_concurrent = list(pool.map(lambda _: timed(lambda: review(pinned)), range(100)))
            del os.environ["ADMISSION_VERDICT_TTL_SECONDS"]  # the default: 5 s
            single = [timed(lambda: review(pinned)) for _ in range(args.requests)]
            single_tags = [timed(lambda: review(tagged)) for _ in range(args.requests)]
            glue = [timed(old_path) for _ in range(max(20, args.requests // 5))]
            with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                concurrent = list(pool.map(lambda _: timed(lambda: review(pinned)), range(max(args.requests, 250))))
            print(f"AdmissionReview of a Pod with {IMAGES} images, through the function body, Azurite on loopback:")
            print(line("single, by digest", single))
            print(line("single, by tag (cached digest)", single_tags))
            print(line(f"{CONCURRENCY} concurrent, by digest", concurrent))
            print(line("single, verdicts uncached", uncached))
            print(line(f"{CONCURRENCY} concurrent, verdicts uncached", uncached_concurrent))
            old = statistics.median(glue)
            print(f"{'old path: 10 GET /verdict in a row':<34} n={len(glue):<4} p50 {old:7.1f} ms; "
                  f"p50 ratio to it: review {statistics.median(single) / old:.3f}, "
                  f"review with verdicts uncached {statistics.median(uncached) / old:.2f}")
            print(f"queued scans (expected 0: every image known): {len(queue.take())}")
            if args.json:
                figures = {"single": single, "single_tags": single_tags, "concurrent": concurrent,
                           "uncached": uncached, "uncached_concurrent": uncached_concurrent}
                args.json.write_text(json.dumps({
                    "images": IMAGES, "concurrency": CONCURRENCY,
                    "goals": {"p50_ms": GOAL_P50_MS, "p99_ms": GOAL_P99_MS}, "old_path_p50_ms": old,
                    "figures": {name: {"n": len(values), "p50_ms": statistics.median(values),
                                       "p99_ms": percentile(values, 0.99)} for name, values in figures.items()},
                }, indent=2))


if __name__ == "__main__":
    main()
