"""Issue 23, items 5 and 7, against the real parts (feeds and a webhook receiver on loopback,
Azurite, the DB refresh timer's handler):

* secrets in URLs: a webhook URL's path segments and query values never reach a log record,
  at DEBUG, although urllib3 logs the request line without the host; a feed URL with
  ``user:password@`` stops start-up, naming the setting, never the password;
* malformed and oversized feeds: every parse failure (a field of the wrong type, nesting too
  deep, a CSV field over csv's limit) keeps the previous feed, writes the status and shows in
  the heartbeat; a gzip bomb is refused as it unpacks, at the line or the unpacked-size bound.
"""

from __future__ import annotations

import json
import logging
import zlib

import pytest
from azure.functions.timer import TimerRequest

from scanner_core.config import load_config
from scanner_core.core import Scanner
from scanner_core.errors import ConfigurationError
from scanner_core.exploits import feeds_dir, forget_feeds
from scanner_core.follow_up import Notifier
from scanner_core.functions import handlers
from scanner_core.heartbeat import build_heartbeat
from tests.conftest import REPO_ROOT
from tests.support.feeds import FeedServer, epss_csv_gz, kev_catalogue
from tests.support.images import SAMPLE_ADVISORIES
from tests.support.trivy_db import build_trivy_db
from tests.support.webhook import WebhookReceiver
from tests.test_log_redaction import Everything, debug_records  # noqa: F401 - the fixture

KEV = [("CVE-2099-0003", "2026-11-01", "2026-11-22", "Known")]
EPSS = {"CVE-2099-0001": (0.02, 0.41), "CVE-2099-0003": (0.91, 0.99)}
EPSS_HEAD = b"#model_version:v2025.03.14,score_date:2026-12-01T00:00:00+0000\ncve,epss,percentile\n"


@pytest.fixture
def feeds(scanner_env, tmp_path):
    forget_feeds()
    build_trivy_db(tmp_path / "cache", SAMPLE_ADVISORIES)
    with FeedServer({"/kev.json": kev_catalogue(KEV), "/epss.csv.gz": epss_csv_gz(EPSS)}) as server:
        scanner_env.set(TRIVY_CACHE_DIR=str(tmp_path / "cache"), DB_SNAPSHOT="none",
                        KEV_FEED_URL=server.url("/kev.json"), EPSS_FEED_URL=server.url("/epss.csv.gz"))
        handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)  # the good feeds, kept
        yield server


def refresh_and_report(tmp_path) -> tuple[dict, dict, dict]:
    """Runs the timer; returns (status.json, the heartbeat's exploit-feeds, the kept files)."""
    handlers.on_db_refresh(TimerRequest(past_due=False), REPO_ROOT)
    kept = feeds_dir(tmp_path / "cache")
    status = json.loads((kept / "status.json").read_text())
    heartbeat = json.loads(build_heartbeat(Scanner(load_config())).to_json_bytes())["exploit-feeds"]
    return status, heartbeat, {name: (kept / name).read_bytes() for name in ("kev.json", "epss.csv.gz")}


def gzip_stream(*parts: tuple[bytes, int]) -> bytes:
    """Each ``(block, times)`` repeated, gzipped as it goes (a bomb is never held unpacked)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([*(packer.compress(block) for block, times in parts for _ in range(times)), packer.flush()])


def test_any_malformed_feed_keeps_the_previous_one_writes_the_status_and_shows_in_the_heartbeat(feeds, tmp_path):
    _, _, before = refresh_and_report(tmp_path)
    host = feeds.base_url.removeprefix("http://")
    cases = [
        # A numeric dateAdded (pydantic's ValidationError), and a quoted EPSS field over csv's 128 KiB.
        (json.dumps({"vulnerabilities": [{"cveID": "CVE-2099-0003", "dateAdded": 20261101}]}).encode(),
         gzip_stream((EPSS_HEAD + b'CVE-2099-0001,"', 1), (b"9\n", 70_000), (b'",0.5\n', 1)),
         "KEV vulnerabilities[0].dateAdded: Input should be a valid string",
         "the EPSS scores are not CSV (field larger than field limit (131072))"),
        # A KEV document nested 100,000 deep (RecursionError); EPSS back to a good one.
        (b'{"vulnerabilities": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", epss_csv_gz(EPSS),
         "the KEV catalogue is nested too deeply to be read", None),
    ]
    for kev, epss, kev_error, epss_error in cases:
        feeds.files["/kev.json"], feeds.files["/epss.csv.gz"] = kev, epss
        status, heartbeat, kept = refresh_and_report(tmp_path)
        assert kept == before  # the previous feeds stay in place
        assert status["kev"]["error"].startswith(f"{host}: {kev_error}; the feed fetched at ")
        assert heartbeat["kev"]["error"] == status["kev"]["error"]
        epss = heartbeat["epss"].get("error")
        assert epss == status["epss"]["error"]  # EPSS was not skipped
        assert epss is None if epss_error is None else epss.startswith(f"{host}: {epss_error}; the feed fetched at ")


def test_a_gzip_bomb_is_refused_as_it_unpacks(feeds, tmp_path):
    _, _, before = refresh_and_report(tmp_path)
    # The bomb: 305 KB whose first line unpacks to 300 MiB; then one of valid rows padded
    # to 4 KB each (float() takes the spaces) that unpacks to 70 MiB.
    first_line = gzip_stream((b"#model_version:v1,", 1), (b"A" * 2**20, 300))
    rows = gzip_stream((EPSS_HEAD, 1), ((b"CVE-2099-0001" + b" " * 4000 + b",0.1,0.1\n") * 256, 70))
    assert len(first_line) < 400_000 and len(rows) < 200_000  # far below the 64 MiB download cap
    for bomb, refused in ((first_line, "EPSS line 1 is longer than 4096 characters"),
                          (rows, "the EPSS scores unpack to more than 64 MiB")):
        feeds.files["/epss.csv.gz"] = bomb
        _, heartbeat, kept = refresh_and_report(tmp_path)
        assert heartbeat["epss"]["error"].startswith(f"{feeds.base_url.removeprefix('http://')}: {refused}; ")
        assert kept == before and "error" not in heartbeat["kev"]


def test_a_webhook_urls_path_and_query_never_reach_a_debug_record(scanner_env, audits, debug_records):
    with WebhookReceiver() as receiver:
        url = f"{receiver.base_url}/hook-q7z/T0AAAA/xoxSECRETpath?token=qwertyTOKEN42"
        scanner_env.set(NOTIFY_WEBHOOK_URLS=url)
        config = load_config()
        scanner = Scanner(config)  # installs the process's redaction with the configuration's secrets
        notifier = Notifier.from_settings(config.settings, scanner.blob_store)
        event = {"audit-id": "urls", "reasons": ["new-findings"], "text": "t"}
        [delivery] = notifier.send_once("trivy-x/20261122-080000-urls", event) or []
        [received] = receiver.all()
    assert delivery.delivered and received.path == "/hook-q7z/T0AAAA/xoxSECRETpath?token=qwertyTOKEN42"
    library = logging.getLogger("somelibrary")
    library.debug("fetching %s and %s", "https://scanner:hunter2pw@127.0.0.1:9/x", "https://ghpTOKENONLY@127.0.0.1:9/y")

    text = "\n".join(debug_records.lines)
    assert '"POST /***/***/***?token=*** HTTP/1.1" 204' in text  # urllib3's request line, by component
    for secret in ("T0AAAA", "xoxSECRETpath", "qwertyTOKEN42", "hunter2pw", "ghpTOKENONLY"):
        assert secret not in text, secret


def test_a_feed_url_with_a_password_is_refused_at_start_up(scanner_env, tmp_path):
    scanner_env.set(KEV_FEED_URL="https://scanner:hunter2pw@127.0.0.1:9/kev.json",
                    EPSS_FEED_URL="https://ghpTOKENONLY@127.0.0.1:9/epss.csv.gz")
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    text = str(caught.value)
    for setting in ("KEV_FEED_URL", "EPSS_FEED_URL"):
        assert f"{setting}: must carry no user name or password before the host" in text
    assert "hunter2pw" not in text and "ghpTOKENONLY" not in text

    # The URL fixed, a status.json the code before issue 23 wrote does not carry the password on.
    build_trivy_db(tmp_path / "cache", SAMPLE_ADVISORIES)
    scanner_env.set(TRIVY_CACHE_DIR=str(tmp_path / "cache"), KEV_FEED_URL="https://127.0.0.1:9/kev.json",
                    EPSS_FEED_URL="")
    old = {"kev": {"source": "scanner:hunter2pw@127.0.0.1:9",
                   "error": "scanner:hunter2pw@127.0.0.1:9: answered HTTP 503"}}
    feeds_dir(tmp_path / "cache").mkdir(parents=True)
    (feeds_dir(tmp_path / "cache") / "status.json").write_text(json.dumps(old))
    kev = json.loads(build_heartbeat(Scanner(load_config())).to_json_bytes())["exploit-feeds"]["kev"]
    assert (kev["source"], kev["error"]) == ("127.0.0.1:9", "127.0.0.1:9: answered HTTP 503")


def test_route_words_of_a_webhook_url_are_not_taken_for_secrets():
    """A URL's lower-case route words (``services``, ``webhooks``) stay readable in every other
    line; its token segments and query values do not."""
    from scanner_core.redact import Redactor, url_secrets

    redact = Redactor(url_secrets("https://hooks.example.com/services/T0ABC/B0DEF/x9Yz8Wq7?token=q1w2e3",
                                  path_segments=True))  # fmt: skip
    text = redact("the services and webhooks are up; POST /services/T0ABC/B0DEF/x9Yz8Wq7?token=q1w2e3")
    assert text.startswith("the services and webhooks are up")
    assert "T0ABC" not in text and "x9Yz8Wq7" not in text and "q1w2e3" not in text
