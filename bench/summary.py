"""One table of every figure of issue 11 beside its goal, from the JSON files that
``bench/run_all.sh`` collected in one directory (one run, side by side with bare trivy).

Usage: ``.venv/bin/python bench/summary.py bench/out/run-<timestamp>/`` (prints Markdown).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def _load(directory: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((directory / f"{name}.json").read_text()))


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def rows(directory: Path) -> list[tuple[str, str, str, str, str, str]]:
    scan, cold, fleet, server = (_load(directory, n) for n in ("scan", "cold_start", "fleet", "server"))
    fleet_rescan = _load(directory, "rescan") if (directory / "rescan.json").is_file() else None
    small, large = scan["small"], scan["large"]
    out: list[tuple[str, str, str, str, str, str]] = []
    ratio = small["ratio_core_over_bare"]
    overhead = small["overhead_per_scan_ms"]
    out.append((f"small image: `Scanner.scan` vs bare `trivy image` (median of {small['rounds']})",
                f"{small['bare_trivy_median_ms']:.0f} ms", f"{small['core_scan_median_ms']:.0f} ms",
                f"{ratio:.2f}× (+{overhead:.0f} ms)", "≤ 1.25×", _met(ratio <= 1.25)))
    phases = small["core_phase_median_ms"]
    out.append(("  of which storage round trips: report, meta, index row + pointer", "", " + ".join(
        f"{phases[k]:.0f}" for k in ("report upload", "meta upload", "index row + pointer")) + " ms",
        f"rest {phases['rest (parse, meta, temp dir...)']:.1f} ms, trivy +{small['core_trivy_phase_minus_bare_ms']:.1f} ms",
        "", ""))
    first = large.get("core_first_scan_seconds", large["core_scan_seconds"])
    large_ratio = first / large["bare_trivy_seconds"]
    out.append((f"{large['report_mib']:.0f} MiB report: core vs bare (the image's first audit)",
                f"{large['bare_trivy_seconds']:.2f} s", f"{first:.2f} s", f"{large_ratio:.2f}× (upload+summary "
                f"{large['core_report_upload_seconds']:.2f} s)", "≤ 1.25×", _met(large_ratio <= 1.25)))
    rescans = large.get("core_scan_seconds_all", [])[1:]
    if rescans:
        rescan = sorted(rescans)[len(rescans) // 2]
        out.append(("  a rescan, with the monitor's comparison to the previous audit's report", "",
                    f"{rescan:.2f} s", f"{rescan / large['bare_trivy_seconds']:.2f}×", "", ""))
    added = large["core_maxrss_over_baseline_mib"]
    out.append(("memory added while shipping that report (peak over all runs)", "", f"+{added:.1f} MiB", "",
                "≤ +32 MiB", _met(added <= 32)))
    medians = cold["median_seconds"]
    imported = medians["import function_app"]
    floor = medians.get("import azure.functions")
    cold_ratio = imported / floor if floor else float("nan")
    out.append(("`python -c 'import function_app'` vs `import azure.functions`",
                f"{floor:.2f} s" if floor else "", f"{imported:.2f} s", f"{cold_ratio:.2f}×", "≤ 1.8×",
                _met(cold_ratio <= 1.8)))
    out.append(("`python -m scanner_core --help`", "", f"{medians['python -m scanner_core --help']:.2f} s", "", "", ""))
    n = fleet["instances"]
    out.append((f"DB downloads from the registry, {n} cold instances", f"{fleet['registry_downloads_without_snapshot']}"
                " (DB_SNAPSHOT=none)", f"{fleet['registry_downloads_with_snapshot']} (DB_SNAPSHOT=blob)", "",
                "1 per refresh period", _met(fleet["registry_downloads_with_snapshot"] <= 1)))
    out.append(("cold instance's first scan (gets its DB first), median", f"{fleet['first_scan_median_from_registry']:.2f} s "
                "from the registry", f"{fleet['first_scan_median_from_snapshot']:.2f} s from the snapshot",
                f"DB layer {fleet['db_layer_bytes'] / 2**20:.0f} MiB", "", ""))
    size = server["size_mib"]
    for mode in ("standalone", "server"):
        bare_first, bare_rescan = server[f"{mode}_bare"]
        core_first, core_rescan = server[f"{mode}_core"]
        out.append((f"{size} MiB image, {mode}: first scan / rescan", f"{bare_first:.2f} / {bare_rescan:.2f} s",
                    f"{core_first:.2f} / {core_rescan:.2f} s",
                    f"{core_first / bare_first:.2f}× / {core_rescan / bare_rescan:.2f}×", "", ""))
    saved = server["standalone_core"][1] / server["server_core"][1]
    out.append(("rescan, core: standalone / server", "", "", f"{saved:.1f}× faster against the server", "", ""))
    if fleet_rescan is not None:
        out.extend(rescan_rows(fleet_rescan))
    out.extend(fleet_cost_rows(directory))
    if (directory / "admission.json").is_file():
        out.extend(admission_rows(_load(directory, "admission")))
    return out


def admission_rows(admission: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """bench_admission.py (issue 25.4): p50 / p99 of an AdmissionReview beside the goals; the baseline is
    the old path (one ``GET /verdict`` per image, in a row)."""
    goals, figures, n = admission["goals"], admission["figures"], admission["images"]
    goal = f"p50 ≤ {goals['p50_ms']:.0f} / p99 ≤ {goals['p99_ms']:.0f} ms"
    named = {"single": "single, by digest", "single_tags": "single, by tag (cached digest)",
             "concurrent": f"{admission['concurrency']} concurrent, by digest", "uncached": "single, verdicts uncached",
             "uncached_concurrent": f"{admission['concurrency']} concurrent, verdicts uncached"}
    out = []
    for key, name in named.items():
        figure = figures[key]
        met = figure["p50_ms"] <= goals["p50_ms"] and figure["p99_ms"] <= goals["p99_ms"]
        out.append((f"AdmissionReview, Pod of {n} images, {name}: p50 / p99",
                    f"{admission['old_path_p50_ms']:.1f} ms (p50, {n} GET /verdict)" if key == "single" else "",
                    f"{figure['p50_ms']:.1f} / {figure['p99_ms']:.1f} ms",
                    f"{figure['p50_ms'] / admission['old_path_p50_ms']:.3f}× (p50)", goal, _met(met)))
    return out


FLEET = 100_000


def rescan_cpu_seconds(directory: Path) -> float | None:
    """The per-rescan CPU that bench_rescan.py prints as ``rescan cpu-seconds per image: <float>``."""
    text = directory / "rescan.txt"
    for line in text.read_text().splitlines() if text.is_file() else ():
        if line.startswith("rescan cpu-seconds per image:"):
            try:
                return float(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


def fleet_cost_rows(directory: Path) -> list[tuple[str, str, str, str, str, str]]:
    """Issue 26.4: the throughput and memory goals (bench_listener.py, bench_concurrency.py) and the vCPU-hours
    for 100,000 images, from the measured per-vCPU rates; "n/a" where a figure was not measured."""
    out: list[tuple[str, str, str, str, str, str]] = []
    throughput = _load(directory, "listener") if (directory / "listener.json").is_file() else None
    core_rate = None
    if throughput is not None:
        for level, own in sorted(throughput["listener"].items(), key=lambda item: int(item[0])):
            bare = throughput["bare"][level]
            ratio = own["scans_per_min_per_vcpu"] / bare["scans_per_min_per_vcpu"]
            out.append((f"3,000-finding image, C = {level}: scans/min/vCPU, listener vs bare `trivy image`",
                        f"{bare['scans_per_min_per_vcpu']:.1f}", f"{own['scans_per_min_per_vcpu']:.1f}",
                        f"{ratio:.2f}×", "≥ 0.8×", _met(ratio >= 0.8)))
            if "mib_per_scan" in own and "mib_per_scan" in bare:
                memory = own["mib_per_scan"] / bare["mib_per_scan"]
                out.append((f"  memory per concurrent scan, C = {level}", f"{bare['mib_per_scan']:.0f} MiB",
                            f"{own['mib_per_scan']:.0f} MiB", f"{memory:.2f}×", "≤ 1.2×", _met(memory <= 1.2)))
            core_rate = own["scans_per_min_per_vcpu"] if core_rate is None else min(core_rate, own["scans_per_min_per_vcpu"])
    host = _load(directory, "concurrency") if (directory / "concurrency.json").is_file() else None
    if host is not None:
        bare_by_c = {run["concurrency"]: run for run in host["bare_runs"]}
        for run in sorted(host["runs"], key=lambda r: r["concurrency"]):
            bare = bare_by_c.get(run["concurrency"])
            if bare is None:
                continue
            ratio = run["scans_per_minute_per_vcpu"] / bare["scans_per_minute_per_vcpu"]
            out.append((f"3,000-finding image, C = {run['concurrency']}: scans/min/vCPU, emulated host vs bare",
                        f"{bare['scans_per_minute_per_vcpu']:.1f}", f"{run['scans_per_minute_per_vcpu']:.1f}",
                        f"{ratio:.2f}×", "≥ 0.8×", _met(ratio >= 0.8)))
            memory = run["mib_per_concurrent_scan"] / bare["mib_per_concurrent_scan"]
            out.append((f"  memory per concurrent scan, C = {run['concurrency']}", f"{bare['mib_per_concurrent_scan']:.0f} MiB",
                        f"{run['mib_per_concurrent_scan']:.0f} MiB", f"{memory:.2f}×", "≤ 1.2×", _met(memory <= 1.2)))
            rate = run["scans_per_minute_per_vcpu"]
            core_rate = rate if core_rate is None else min(core_rate, rate)
    first = f"{FLEET / core_rate / 60:,.0f} vCPU-h" if core_rate else "n/a"
    out.append((f"first scan of {FLEET:,} images (3,000-finding image, slowest measured rate)", "", first, "", "", ""))
    per_rescan = rescan_cpu_seconds(directory)
    daily = f"{FLEET * per_rescan / 3600:,.1f} vCPU-h" if per_rescan is not None else "n/a"
    out.append((f"daily rescan of {FLEET:,} images (bench_rescan.py's cpu-seconds per rescan)", "", daily, "", "", ""))
    return out


def rescan_rows(rescan: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """bench_rescan.py (issue 18): the fleet's rescan pass from inventories and from images."""
    core, bare, goals = rescan["core"], rescan["bare"], rescan["goals"]
    n, big = rescan["images"], rescan["big_mib"]
    inventory, image = core["inventory"], core["image"]
    return [
        (f"fleet rescan, {n} images: registry bytes, `RESCAN_FROM=inventory` / `=image`",
         f"{bare['sbom']['registry_bytes']} / {bare['image']['registry_bytes']:,} (bare sbom / image)",
         f"{inventory['registry_bytes']} / {image['registry_bytes']:,}", "", "0 (inventory)",
         _met(inventory["registry_bytes"] == 0)),
        (f"fleet rescan pass, {n} images: wall (CPU) s, inventory vs bare `trivy sbom` loop",
         f"{bare['sbom']['total_wall_s']:.1f} ({bare['sbom']['total_cpu_s']:.1f})",
         f"{inventory['total_wall_s']:.1f} ({inventory['total_cpu_s']:.1f})",
         f"{goals['inventory_pass_over_bare_sbom_loop']:.2f}×", "≤ 1.2×",
         _met(goals["inventory_pass_over_bare_sbom_loop"] <= 1.2)),
        (f"  the same pass from the images (`RESCAN_FROM=image`) vs bare `trivy image` loop",
         f"{bare['image']['total_wall_s']:.1f} ({bare['image']['total_cpu_s']:.1f})",
         f"{image['total_wall_s']:.1f} ({image['total_cpu_s']:.1f})",
         f"{image['total_wall_s'] / inventory['total_wall_s']:.2f}× the inventory pass", "", ""),
        (f"{big} MiB image: inventory rescan vs its first scan (core)", f"{rescan['first_scan_big']['wall_s']:.2f} s",
         f"{inventory['big_wall_s']:.2f} s", f"{goals['big_rescan_over_first_scan']:.3f}×", "≤ 0.05×",
         _met(goals["big_rescan_over_first_scan"] <= 0.05)),
    ] + batch_rows(rescan, n)


def batch_rows(rescan: dict[str, Any], n: int) -> list[tuple[str, str, str, str, str, str]]:
    """bench_rescan.py (issue 26): the batched pass through a loopback trivy server."""
    core, bare, goals = rescan["core"], rescan["bare"], rescan["goals"]
    if "batch" not in core:
        return []
    batch, served = core["batch-standalone"], core["batch"]
    return [
        (f"fleet rescan pass, {n} images, batched (default): wall (CPU) s vs bare `trivy sbom` loop",
         f"{bare['sbom']['total_wall_s']:.1f} ({bare['sbom']['total_cpu_s']:.1f})",
         f"{batch['total_wall_s']:.1f} ({batch['total_cpu_s']:.1f})",
         f"{goals['batch_pass_over_bare_sbom_loop']:.2f}× ({goals['batch_cpu_over_bare_sbom_loop']:.2f}× CPU)",
         "≤ 0.5×", _met(goals["batch_pass_over_bare_sbom_loop"] <= 0.5)),
        ("  the same with a loopback trivy server per batch (`RESCAN_SERVER=auto`)", "",
         f"{served['total_wall_s']:.1f} ({served['total_cpu_s']:.1f})",
         f"{goals['batch_server_pass_over_bare_sbom_loop']:.2f}× ({goals['batch_server_cpu_over_bare_sbom_loop']:.2f}× CPU)",
         "", ""),
        ("  per rescan CPU (core + trivy) / floor: bare `trivy sbom --server` loop vs bare sbom",
         "", f"{goals['rescan_cpu_seconds_per_image']:.3f} s",
         f"{goals['bare_server_loop_over_bare_sbom_loop']:.2f}×", "", ""),
    ]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")  # fmt: skip
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, load average {load} at the end"


def main(argv: list[str]) -> int:
    directory = Path(argv[1])
    print(f"Machine: {machine()}\n")
    print("| figure | bare trivy / baseline | this scanner | ratio | goal | |")
    print("|---|---:|---:|---|---|---|")
    for row in rows(directory):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
