"""Schemathesis against the real Envoy in front of the real hub, driven by the published OpenAPI document.

Every operation gets a few generated requests in three passes: positive (schema-conforming), positive with
path parameters naming resources that exist (so success bodies are checked, not only errors) and negative
(schema-breaking, including a missing token). Runs are derandomized (reproducible) and bounded (a few examples
per pass, no shrinking), with a token that has every role. Three checks run on every response:
``not_a_server_error`` (no 5xx), ``response_schema_conformance`` (the body matches the documented 200 schema or,
for errors, ``google.rpc.Status``) and ``content_type_conformance``.

It found two gateway bugs, both fixed in ``gateway/render.py``: a header name that is valid HTTP but not valid
gRPC metadata made grpc-core refuse the call (a 500; ``test_routing.test_headers_that_are_not_grpc_metadata_are_
dropped``), and ``:watch`` streams were labelled ``application/json`` although the body is newline-delimited
JSON, as documented (now ``application/x-ndjson``).

Schemathesis is synchronous (``requests``), and the hub and Envoy's upstreams are served by this test's event
loop, so the fuzzing runs in a worker thread while the loop keeps serving.

Limits: the body of a ``:watch`` stream is not schema-checked here (schemathesis validates one JSON document per
response; the stream has one per line): ``test_execution_rest.py`` checks its events. Operations whose RPC the
running service does not implement yet (UNIMPLEMENTED, 501) are skipped, found by comparing the servicer class
with the generated base class, so they join the run as soon as they are implemented; the test prints them.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.strategies import SearchStrategy
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import ALL_ROLES
from exthub.execution.v1 import execution_service_pb2_grpc
from gateway.envoy import RunningEnvoy
from services.catalog.servicer import CatalogServicer
from services.execution.servicer import ExecutionServicer
from tests.component.gateway.conftest import call

OPENAPI = Path(__file__).resolve().parents[3] / "gen" / "openapi" / "exthub.openapi.yaml"
EXAMPLES_PER_OPERATION = 6
REQUEST_TIMEOUT_SECONDS = 10
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
SERVICERS: dict[str, tuple[type[Any], type[Any]]] = {
    "CatalogService": (CatalogServicer, catalog_service_pb2_grpc.CatalogServiceServicer),
    "ExecutionService": (ExecutionServicer, execution_service_pb2_grpc.ExecutionServiceServicer),
}


def not_implemented(operation_id: str) -> bool:
    """True when the service's servicer does not override the generated (UNIMPLEMENTED) method."""
    service, _, method = operation_id.partition("_")
    servicer, base = SERVICERS[service]
    return getattr(servicer, method) is getattr(base, method)


@dataclass
class FuzzReport:
    """What the run tested and skipped, the failures found, and the HTTP statuses seen per operation."""

    tested: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def total(self) -> Counter[int]:
        return sum(self.statuses.values(), Counter())


def _settings() -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def _property(
    strategy: SearchStrategy[schemathesis.Case[Any]], base_url: str, headers: dict[str, str], statuses: Counter[int]
) -> Callable[[], None]:
    """The hypothesis test of one pass: send each generated case, count its status, run the checks."""

    @hypothesis.given(case=strategy)
    @_settings()
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run


def fuzz(base_url: str, token: str, known: dict[str, str]) -> FuzzReport:
    """Run every operation's generated cases against ``base_url`` (blocking: call it in a thread).

    Three passes per operation: positive cases, positive cases whose path parameters name resources that exist
    (``known``, so success bodies are checked too, not only errors), and negative cases.
    """
    schema = schemathesis.openapi.from_path(OPENAPI, config=schemathesis.Config())
    headers = {"Authorization": f"Bearer {token}"}
    report = FuzzReport()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            report.failures.append(f"the schema has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        operation_id = str(operation.definition.raw["operationId"])
        if not_implemented(operation_id):
            report.skipped[operation_id] = "not implemented by the service yet"
            continue
        report.tested.append(operation_id)
        path_names = {parameter.name for parameter in operation.path_parameters}
        passes: list[tuple[str, schemathesis.GenerationMode, dict[str, str] | None]] = [
            ("positive", schemathesis.GenerationMode.POSITIVE, None),
            ("negative", schemathesis.GenerationMode.NEGATIVE, None),
        ]
        if path_names:
            existing = {name: value for name, value in known.items() if name in path_names}
            passes.insert(1, ("existing resources", schemathesis.GenerationMode.POSITIVE, existing))
        statuses = report.statuses[operation_id]
        for label, mode, path_parameters in passes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            try:
                _property(strategy, base_url, headers, statuses)()
            except hypothesis.errors.Unsatisfiable:
                if mode != schemathesis.GenerationMode.NEGATIVE:  # negative: fine when there is nothing to break
                    report.failures.append(f"{operation_id} ({label}): no case could be generated")
            except (Exception, FailureGroup) as error:  # every operation's failures are reported together
                report.failures.append(f"{operation_id} ({label}): {error}")
    return report


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    gateway: RunningEnvoy, issuer: DevIssuer, http: aiohttp.ClientSession
) -> None:
    token = issuer.issue(tenant="tenant-fuzz", user="fuzzer", roles=list(ALL_ROLES))
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": "extensions/echo-plain/versions/1.0.0", "request": {"fuzz": True}},
        headers={"authorization": f"Bearer {token}"},
    )
    assert created.status == 200, created.body
    known = {"extension": "echo", "version": "1.0.0", "execution": created.body["name"].split("/", 1)[1]}
    report = await asyncio.to_thread(fuzz, gateway.url, token, known)
    print(f"schemathesis: tested {len(report.tested)}, skipped {report.skipped}, statuses {dict(report.total())}")
    for operation_id, statuses in sorted(report.statuses.items()):
        print(f"  {operation_id}: {dict(sorted(statuses.items()))}")
    assert not report.failures, "\n\n".join(report.failures)
    assert len(report.tested) >= 20, report.tested
    total = report.total()
    assert not [status for status in total if status >= 500]
    assert total[200] >= len(report.tested), "success bodies are checked against the schema too"
