"""The big-image builder (bench fixture): deterministic, of the asked size, and
scanned by the real trivy with the sample findings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

from tests.support.big_image import MIB, build_big_image
from tests.support.images import SAMPLE_ADVISORIES, SAMPLE_PACKAGES, expected_findings
from tests.support.trivy_db import build_trivy_db


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    first = build_big_image(tmp_path / "a.tar", size_mib=3, file_mib=1, text_files=1)
    second = build_big_image(tmp_path / "b.tar", size_mib=3, file_mib=1, text_files=1)
    other = build_big_image(tmp_path / "c.tar", size_mib=4, file_mib=1, text_files=1)
    reseeded = build_big_image(tmp_path / "d.tar", size_mib=3, file_mib=1, text_files=1, seed="x")

    assert _sha256(first.path) == _sha256(second.path)
    assert first.config_digest == second.config_digest != other.config_digest
    assert reseeded.config_digest != first.config_digest
    assert first.layer_bytes >= 3 * MIB
    assert first.file_count == 3  # one text file, two 1 MiB blobs


def test_archive_has_two_layers_whose_digests_match_the_config(tmp_path: Path) -> None:
    image = build_big_image(tmp_path / "big.tar", size_mib=2, file_mib=1, text_files=0)
    with tarfile.open(image.path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(archive.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        digests = []
        for layer in manifest["Layers"]:
            digests.append("sha256:" + hashlib.sha256(archive.extractfile(layer).read()).hexdigest())  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == digests
    assert "sha256:" + hashlib.sha256(json.dumps(config, separators=(",", ":"), sort_keys=True).encode()).hexdigest() == (
        image.config_digest
    )


def test_trivy_scans_it_with_the_sample_findings(tmp_path: Path, trivy_executable: Path) -> None:
    image = build_big_image(tmp_path / "big.tar", size_mib=4, file_mib=2, text_files=1)
    build_trivy_db(tmp_path / "cache", SAMPLE_ADVISORIES)
    report = tmp_path / "report.json"
    home = tmp_path / "home"
    home.mkdir()
    completed = subprocess.run(
        [str(trivy_executable), "image", "--cache-dir", str(tmp_path / "cache"), "--skip-db-update",
         "--offline-scan", "--skip-version-check", "--disable-telemetry", "--no-progress", "--quiet",
         "--cache-backend", "memory", "--format", "json", "--output", str(report), "--input", str(image.path)],
        env={"HOME": str(home), "PATH": os.defpath, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    document = json.loads(report.read_text())
    found = {v["VulnerabilityID"] for r in document["Results"] for v in r.get("Vulnerabilities") or []}
    assert found == {f.vulnerability_id for f in expected_findings(SAMPLE_PACKAGES, SAMPLE_ADVISORIES)}
    assert document["Metadata"]["ImageID"] == image.config_digest
    assert len(document["Metadata"]["DiffIDs"]) == 2
