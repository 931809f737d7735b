"""The kinds of DB trivy keeps in its cache dir: where each lives and how trivy fetches it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatabaseKind:
    """Where one of trivy's DBs lives in the cache dir and how trivy fetches it.

    Generic on purpose: whatever provides a DB (trivy's download, a snapshot
    kept elsewhere) only needs these names.
    """

    name: str  # for messages: "vulnerability DB", "Java DB"
    dir_name: str  # under the cache dir; trivy's own layout
    db_file: str
    versions_dir: str  # the downloaded versions the dir_name symlink points into
    lock_file: str
    download_flag: str
    repository_flag: str
    skip_setting: str  # the setting that disables its updates
    repository_setting: str
    metadata_file: str = "metadata.json"


VULNERABILITY_DB = DatabaseKind(
    name="vulnerability DB", dir_name="db", db_file="trivy.db", versions_dir="db-versions",
    lock_file=".db-refresh.lock", download_flag="--download-db-only", repository_flag="--db-repository",
    skip_setting="TRIVY_SKIP_DB_UPDATE", repository_setting="TRIVY_DB_REPOSITORY",
)
JAVA_DB = DatabaseKind(
    name="Java DB", dir_name="java-db", db_file="trivy-java.db", versions_dir="java-db-versions",
    lock_file=".java-db-refresh.lock", download_flag="--download-java-db-only",
    repository_flag="--java-db-repository", skip_setting="TRIVY_SKIP_JAVA_DB_UPDATE",
    repository_setting="TRIVY_JAVA_DB_REPOSITORY",
)
