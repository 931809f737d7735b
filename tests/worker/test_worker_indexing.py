"""The real worker indexes the packaged app: every function, with the bindings the app
declares, and a binding mistake stops it at indexing."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.func_package import SITE_PACKAGES

SETTINGS = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


@pytest.fixture(scope="session")
def declared() -> dict[str, list[dict]]:
    """What ``app.get_functions()`` says, in this (3.13) interpreter: name -> bindings."""
    import function_app

    # get_functions() may be called once per app object.
    functions = function_app.app.get_functions()
    return {f.get_function_name(): json.loads(f.get_function_json())["bindings"] for f in functions}


def test_the_worker_indexes_every_function_with_the_apps_bindings(start_worker, declared, package, pb):
    host = start_worker(SETTINGS)
    assert host.start_stream.start_stream.worker_id
    init = host.init_response
    assert init.result.status == pb.StatusResult.Success, init.result.exception.message
    assert init.worker_metadata.runtime_version == "3.13"
    # What the host double's RpcHttp relies on: body bytes only, no HTTP trigger metadata.
    for capability in ("RawHttpBodyBytes", "RpcHttpBodyOnly", "RpcHttpTriggerMetadataRemoved"):
        assert init.capabilities[capability] == "true", capability
    metadata = host.metadata_response
    assert metadata.result.status == pb.StatusResult.Success
    assert metadata.use_default_metadata_indexing is False
    assert len(declared) >= 14  # other branches add functions: never fewer than today's
    assert set(host.functions) == set(declared)
    for name, function in host.functions.items():
        assert function.directory == str(package)
        assert function.properties["worker_indexed"] == "True"
        assert function.function_id
        worker_bindings = {b["name"]: b for b in map(json.loads, function.raw_bindings)}
        app_bindings = {b["name"]: b for b in declared[name]}
        assert worker_bindings.keys() == app_bindings.keys(), name
        for binding, expected in app_bindings.items():
            assert worker_bindings[binding] == expected, (name, binding)
            assert function.bindings[binding].type == expected["type"]
            want = pb.BindingInfo.out if expected["direction"] == "OUT" else getattr(pb.BindingInfo, "in")
            assert function.bindings[binding].direction == want, (name, binding)
    for name, loaded in host.load_responses.items():
        assert loaded.result.status == pb.StatusResult.Success, (name, loaded.result.exception.message)
        assert loaded.function_id == host.functions[name].function_id


def test_an_output_parameter_without_its_out_annotation_fails_indexing(start_worker, package, tmp_path, pb):
    broken = tmp_path / "app"
    shutil.copytree(package, broken, ignore=shutil.ignore_patterns(".python_packages"))
    (broken / ".python_packages" / "lib").mkdir(parents=True)
    (broken / SITE_PACKAGES).symlink_to(package / SITE_PACKAGES)
    module = broken / "scanner_core" / "functions" / "scan_queue.py"
    source = module.read_text()
    assert "quarantine: func.Out[str]" in source
    module.write_text(source.replace("quarantine: func.Out[str]", "quarantine: str"))

    host = start_worker(SETTINGS, broken, load=False)
    init = host.init_response
    assert init.result.status == pb.StatusResult.Failure
    message = init.result.exception.message
    assert "scan_request" in message and "quarantine" in message, message
    assert "Out" in message, message  # the indexing error names the missing annotation
    # The metadata response carries no function: the host would start none of them.
    assert list(host.metadata_response.function_metadata_results) == []
