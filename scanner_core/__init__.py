"""The scanner core: one trivy scan of one image, shipped to Blob Storage."""

__version__ = "0.1.0"

from .log_records import install as _install_log_redaction

# Every log record of a process that uses the scanner is redacted, whatever logger
# emitted it (urllib3 quotes SAS URLs at DEBUG): see log_records.py.
_install_log_redaction()
