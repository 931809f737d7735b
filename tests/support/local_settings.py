"""Writes ``local.settings.json`` for ``func start`` against Azurite on its default
ports, from ``local.settings.json.example``: a fresh scanner id, a container SAS
URL for ``audits`` signed with the emulator's well-known key, and this venv's trivy.

    python -m tests.support.local_settings [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import BlobServiceClient, generate_container_sas

from tests.support.azurite import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOB_ENDPOINT = f"http://127.0.0.1:10000/{DEV_ACCOUNT_NAME}"
CONTAINER = "audits"


def container_sas_url(days: int = 30) -> str:
    sas = generate_container_sas(
        account_name=DEV_ACCOUNT_NAME,
        container_name=CONTAINER,
        account_key=DEV_ACCOUNT_KEY,
        permission="racwl",
        expiry=datetime.now(timezone.utc) + timedelta(days=days),
    )
    return f"{BLOB_ENDPOINT}/{CONTAINER}?{sas}"


def create_container_if_azurite_runs() -> bool:
    try:
        with BlobServiceClient.from_connection_string("UseDevelopmentStorage=true", retry_total=0) as service:
            service.create_container(CONTAINER)
    except ResourceExistsError:
        return True
    except AzureError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite an existing local.settings.json")
    args = parser.parse_args()
    target = REPO_ROOT / "local.settings.json"
    if target.exists() and not args.force:
        print(f"{target} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    settings = json.loads((REPO_ROOT / "local.settings.json.example").read_text())
    values = settings["Values"]
    values["SCANNER_IDENTIFIER"] = str(uuid.uuid4())
    values["AZ_BLOB_STORAGE_SAS"] = container_sas_url()
    values["TRIVY_PATH"] = str(Path(sys.prefix) / "bin" / "trivy")
    target.write_text(json.dumps(settings, indent=2) + "\n")
    created = create_container_if_azurite_runs()
    print(f"wrote {target} (scanner id {values['SCANNER_IDENTIFIER']})")
    print("container 'audits' is ready" if created else "start Azurite, then run this again to create container 'audits'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
