"""A double of the Azure Functions host's side of the language-worker protocol, driving the
real Python worker library (``azure-functions-runtime``) over the deployment package.

Follows the public ``FunctionRpc.proto`` (Azure/azure-functions-language-worker-protobuf) and
what the host does with it (Azure/azure-functions-host: ``GrpcWorkerChannel``,
``RpcWorkerContext``, ``GrpcMessageConversionExtensions``; the queue trigger's binding data in
Azure/azure-sdk-for-net, ``QueueTriggerBinding``):

- the worker process gets the host's environment: cwd = the script root,
  ``FUNCTIONS_WORKER_RUNTIME=python``, ``AzureWebJobsScriptRoot``,
  ``FUNCTIONS_WORKER_DIRECTORY``, ``FUNCTIONS_APPLICATION_DIRECTORY``,
  ``FUNCTIONS_WORKER_RUNTIME_VERSION``, ``PYTHON_THREADPOOL_THREAD_COUNT`` and the app settings;
- ``WorkerInitRequest`` (host version, the host's capabilities, worker and app directories),
  ``FunctionsMetadataRequest``, one ``FunctionLoadRequest`` per function (the Python worker
  does not announce ``SupportsLoadResponseCollection``), then ``InvocationRequest``s whose
  ``TypedData`` and trigger metadata are built as the host builds them (``queue_invocation``,
  ``http_invocation``, ``timer_invocation``, ``event_grid_invocation``).

What it does not do: the host's own listeners (queue polling, timers' schedules, HTTP
routing and keys), retries and poison queues, scaling. The tests play those parts. The
stream runs over the worker process's stdin/stdout (``worker_shim.py``), not gRPC.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

SHIM = Path(__file__).with_name("worker_shim.py")
HOST_VERSION = "4.1044.0"
# What the host announces in WorkerInitRequest.capabilities.
HOST_CAPABILITIES = {
    "RawHttpBodyBytes": "true", "TypedDataCollection": "true", "RpcHttpBodyOnly": "true",
    "RpcHttpTriggerMetadataRemoved": "true", "IgnoreEmptyValuedRpcHttpHeaders": "true",
    "HandlesWorkerTerminateMessage": "true", "HandlesInvocationCancelMessage": "true",
}  # fmt: skip
TIMEOUT = 300.0


class WorkerDied(RuntimeError):
    pass


class FunctionsHost:
    """One worker process over ``package``; ``start()`` sends the init request."""

    def __init__(
        self, pb: ModuleType, package: Path, worker_lib: Path, protos: Path, python: Path, settings: Mapping[str, str]
    ) -> None:
        self.pb, self.package = pb, package
        self.logs: list[Any] = []
        self.functions: dict[str, Any] = {}  # name -> RpcFunctionMetadata
        self.init_response: Any = None
        self.metadata_response: Any = None
        self.load_responses: dict[str, Any] = {}
        env = dict(settings)
        env.update(
            FUNCTIONS_WORKER_RUNTIME="python",
            FUNCTIONS_WORKER_RUNTIME_VERSION=f"{sys.version_info.major}.{sys.version_info.minor}",
            AzureWebJobsScriptRoot=str(package),
            FUNCTIONS_WORKER_DIRECTORY=str(worker_lib),
            FUNCTIONS_APPLICATION_DIRECTORY=str(package),
            PYTHON_THREADPOOL_THREAD_COUNT=env.get("PYTHON_THREADPOOL_THREAD_COUNT", "1000"),
            WORKER_ID=str(uuid.uuid4()),
        )
        self._worker_lib = worker_lib
        self._process = subprocess.Popen(
            [str(python), "-I", "-S", "-B", str(SHIM), str(package), str(worker_lib), str(protos)],
            cwd=package, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._inbox: queue.Queue[Any] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        try:
            self.start_stream = self._next(lambda m: m.WhichOneof("content") == "start_stream")
        except BaseException:
            self.close()
            raise

    # -- transport ----------------------------------------------------------

    def _read(self) -> None:
        out = self._process.stdout
        assert out is not None
        while len(header := out.read(4)) == 4:
            message = self.pb.StreamingMessage()
            message.ParseFromString(out.read(struct.unpack(">I", header)[0]))
            if message.WhichOneof("content") == "rpc_log":
                self.logs.append(message.rpc_log)
            else:
                self._inbox.put(message)
        self._inbox.put(None)

    def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self.stderr.append(line.decode("utf-8", "replace"))

    def _next(self, wanted: Any) -> Any:
        while True:
            try:
                message = self._inbox.get(timeout=TIMEOUT)
            except queue.Empty:
                raise WorkerDied(f"no answer from the worker in {TIMEOUT} s; stderr: {''.join(self.stderr)[-4000:]}")
            if message is None:
                raise WorkerDied(f"the worker exited ({self._process.wait()}): {''.join(self.stderr)[-4000:]}")
            if wanted(message):
                return message

    def request(self, **content: Any) -> Any:
        """Sends one ``StreamingMessage`` and returns the worker's answer to it (its content)."""
        request_id = str(uuid.uuid4())
        data = self.pb.StreamingMessage(request_id=request_id, **content).SerializeToString()
        assert self._process.stdin is not None
        self._process.stdin.write(struct.pack(">I", len(data)) + data)
        self._process.stdin.flush()
        answer = self._next(lambda m: m.request_id == request_id)
        return getattr(answer, answer.WhichOneof("content"))

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> FunctionsHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the host's sequence --------------------------------------------------

    def handshake(self, *, load: bool = True) -> FunctionsHost:
        """Init, metadata and (unless ``load=False``) a load request per function; the answers
        are kept in ``init_response``, ``metadata_response`` and ``load_responses``."""
        self.init_response = self.init()
        self.metadata_response = self.metadata()
        if load:
            self.load_responses = self.load_all()
        return self

    def init(self) -> Any:
        return self.request(worker_init_request=self.pb.WorkerInitRequest(
            host_version=HOST_VERSION, capabilities=HOST_CAPABILITIES,
            worker_directory=str(self._worker_lib), function_app_directory=str(self.package),
        ))  # fmt: skip

    def metadata(self) -> Any:
        response = self.request(
            functions_metadata_request=self.pb.FunctionsMetadataRequest(function_app_directory=str(self.package))
        )
        self.functions = {f.name: f for f in response.function_metadata_results}
        return response

    def load_all(self) -> dict[str, Any]:
        """A ``FunctionLoadRequest`` for each indexed function: name -> ``FunctionLoadResponse``."""
        return {
            name: self.request(function_load_request=self.pb.FunctionLoadRequest(
                function_id=meta.function_id, metadata=meta))  # fmt: skip
            for name, meta in self.functions.items()
        }

    def invoke(self, function: str, inputs: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Any:
        """An ``InvocationRequest`` of ``function``; returns the ``InvocationResponse``."""
        pb = self.pb
        request = pb.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=self.functions[function].function_id,
            input_data=[pb.ParameterBinding(name=name, data=data) for name, data in inputs.items()],
            trigger_metadata=dict(metadata or {}),
            trace_context=pb.RpcTraceContext(trace_parent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"),
            retry_context=pb.RetryContext(),
        )
        return self.request(invocation_request=request)

    def binding_name(self, function: str, binding_type: str) -> str:
        for raw in self.functions[function].raw_bindings:
            binding = json.loads(raw)
            if binding["type"] == binding_type:
                return str(binding["name"])
        raise KeyError(f"{function} has no {binding_type} binding")

    # -- invocations as the host builds them ------------------------------------

    def queue_invocation(
        self, function: str, body: str, *, message_id: str, dequeue_count: int, inserted: datetime, pop_receipt: str
    ) -> Any:
        """A queue trigger under ``messageEncoding: none``: the body as ``TypedData.string``;
        the binding data ``QueueTrigger``/``Id``/``PopReceipt`` as strings, ``DequeueCount``
        and the times as Newtonsoft JSON (a number; quoted ISO 8601 with 7 fraction digits)."""
        pb = self.pb
        trigger = self.binding_name(function, "queueTrigger")
        metadata = {
            "QueueTrigger": pb.TypedData(string=body),
            "Id": pb.TypedData(string=message_id),
            "PopReceipt": pb.TypedData(string=pop_receipt),
            "DequeueCount": pb.TypedData(json=json.dumps(dequeue_count)),
            "InsertionTime": pb.TypedData(json=json.dumps(_net_time(inserted))),
            "ExpirationTime": pb.TypedData(json=json.dumps(_net_time(inserted + timedelta(days=7)))),  # default TTL
            "NextVisibleTime": pb.TypedData(json=json.dumps(_net_time(inserted))),
        }
        return self.invoke(function, {trigger: pb.TypedData(string=body)}, metadata)

    def http_invocation(
        self,
        function: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Any:
        """``RpcHttp`` as the host sends it to a worker with ``RawHttpBodyBytes`` and
        ``RpcHttpBodyOnly``: method, full URL (path as received, query string), lower-cased
        headers, non-empty query values, route values (already matched), body bytes only when
        there is a body; no HTTP trigger metadata (``RpcHttpTriggerMetadataRemoved``)."""
        pb = self.pb
        query = dict(query or {})
        all_headers = {"host": "localhost:7071", **{k.lower(): v for k, v in (headers or {}).items()}}
        if body:
            all_headers["content-length"] = str(len(body))
        url = f"http://localhost:7071{path}" + (f"?{urlencode(query)}" if query else "")
        http = pb.RpcHttp(
            method=method, url=url, headers=all_headers, params=dict(params or {}),
            query={k: v for k, v in query.items() if v},
        )  # fmt: skip
        if body:
            http.body.CopyFrom(pb.TypedData(bytes=body))
        return self.invoke(function, {self.binding_name(function, "httpTrigger"): pb.TypedData(http=http)})

    def timer_invocation(self, function: str, *, past_due: bool = False) -> Any:
        """The timer's ``TimerInfo`` as the host serializes it (Newtonsoft JSON)."""
        timer = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {"Last": "0001-01-01T00:00:00", "Next": "2026-12-01T00:05:00+00:00",
                               "LastUpdated": "0001-01-01T00:00:00"},
            "IsPastDue": past_due,
        }  # fmt: skip
        name = self.binding_name(function, "timerTrigger")
        return self.invoke(function, {name: self.pb.TypedData(json=json.dumps(timer))})

    def event_grid_invocation(self, function: str, event: Mapping[str, Any]) -> Any:
        """An Event Grid event (Event Grid schema) as JSON."""
        name = self.binding_name(function, "eventGridTrigger")
        return self.invoke(function, {name: self.pb.TypedData(json=json.dumps(event))})


def _net_time(moment: datetime) -> str:
    """A DateTimeOffset as Newtonsoft writes it: ``2026-11-22T09:15:00.0000000+00:00``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" + moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]


def output(response: Any, name: str) -> Any:
    """The ``TypedData`` the worker returned for output binding ``name`` (or ``None``)."""
    for binding in response.output_data:
        if binding.name == name:
            return binding.data
    return None


def environment_for_worker(values: Mapping[str, str]) -> dict[str, str]:
    """The app settings for the worker: ``values`` over a minimal process environment
    (``PATH`` without the test venv, so trivy must come from the package)."""
    base = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR") if k in os.environ}
    base["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {**base, **values}
