"""An image whose packages carry licences trivy classifies (``--scanners license``):
two Python distributions (``*.dist-info/METADATA``: AGPL-3.0 and MIT) and an npm
package (``node_modules/*/package.json``: GPL-3.0-only), on top of the Alpine
sample, whose apk packages declare their own (``L:`` lines)."""

from __future__ import annotations

import json

SITE = "usr/lib/python3.11/site-packages"


def _dist_info(name: str, version: str, licence: str) -> dict[str, bytes]:
    folder = f"{SITE}/{name.replace('-', '_')}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: {licence}\n"
    return {f"{folder}/METADATA": metadata.encode()}


LICENCE_FILES: dict[str, bytes] = {
    **_dist_info("copyleft-lib", "1.0.0", "AGPL-3.0"),
    **_dist_info("easy-lib", "2.0.0", "MIT"),
    "app/node_modules/shared-lib/package.json": json.dumps(
        {"name": "shared-lib", "version": "3.0.0", "license": "GPL-3.0-only"}).encode(),
}
