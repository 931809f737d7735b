"""The scanner core: one trivy scan of one image, shipped to Blob Storage."""

__version__ = "0.1.0"
