"""The fixture data for JAR-bearing images: two JARs, their Java DB rows and
their Maven advisories, and what trivy must report for them.

* ``NAMED_JAR`` carries ``pom.properties`` (trivy names it without the DB);
* ``OPAQUE_JAR`` carries none and a name without a version: trivy can only
  name it by its SHA-1 in the Java DB.
"""

from __future__ import annotations

from .images import Finding
from .jars import build_jar
from .trivy_db import MavenAdvisory

NAMED_JAR = build_jar("org.example", "log-lib", "2.14.1")
OPAQUE_JAR = build_jar("com.acme", "opaque-lib", "1.0.0", with_pom_properties=False)
NAMED_JAR_PATH = "app/lib/log-lib-2.14.1.jar"
OPAQUE_JAR_PATH = "app/lib/opaque.jar"
JAR_FILES = {NAMED_JAR_PATH: NAMED_JAR.content, OPAQUE_JAR_PATH: OPAQUE_JAR.content}
JAVA_DB_ROWS = (NAMED_JAR.java_db_row(), OPAQUE_JAR.java_db_row())

MAVEN_ADVISORIES = (
    MavenAdvisory("CVE-2099-1001", NAMED_JAR.name, ("<2.15.0",), ("2.15.0",), "CRITICAL",
                  "log-lib: remote code execution through message lookups"),
    MavenAdvisory("CVE-2099-1002", OPAQUE_JAR.name, (">=1.0.0, <1.0.5",), ("1.0.5",), "HIGH",
                  "opaque-lib: unsafe deserialization"),
    MavenAdvisory("CVE-2099-1003", OPAQUE_JAR.name, ("<0.9.0",), ("0.9.0",), "LOW",
                  "opaque-lib: fixed long before the installed version"),  # must NOT be reported
)

EXPECTED_MAVEN = {
    Finding("CVE-2099-1001", NAMED_JAR.name, "2.14.1", "2.15.0", "CRITICAL"),
    Finding("CVE-2099-1002", OPAQUE_JAR.name, "1.0.0", "1.0.5", "HIGH"),
}


def maven_findings(report: dict) -> set[Finding]:
    """The ``jar`` results' findings of a trivy JSON report."""
    return {
        Finding(v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v.get("FixedVersion", ""), v["Severity"])
        for result in report.get("Results", [])
        if result.get("Type") == "jar"
        for v in result.get("Vulnerabilities") or []
    }
