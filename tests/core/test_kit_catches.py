"""The conformance kit fails backends with real vendor bugs and passes correct ones.

One run of the kit, in a fresh interpreter, against the five fixture backends of
``kit_fixtures/backends.py`` (registered with ``--dsrt-plugin``): two correct ones (``kitgood``,
synchronous; ``kitasync``, asynchronous) and three with one bug each. Outcomes are read per test from
the JUnit XML report; skip reasons also from the ``-rs`` summary a user sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BACKENDS = ("kitgood", "kitleak", "kitwrong", "kitasync", "kitunordered")
#: What the fixture devices claim (kit_fixtures/backends.py); every other standard pair must be skipped.
CLAIMS = {
    "kitgood": {("add", "float32"), ("add", "int32"), ("copy", "float32"), ("copy", "int32"), ("scale", "float32")},
    "kitasync": {("add", "float32"), ("copy", "float32")},
}


@dataclass
class KitRun:
    returncode: int
    stdout: str = field(repr=False)
    #: test name (``test_dlpack[kitgood:0]``) -> (outcome: passed/failed/skipped, message)
    outcomes: dict[str, tuple[str, str]] = field(repr=False)

    def outcome(self, name: str) -> str:
        assert name in self.outcomes, f"{name} was not run; ran: {sorted(self.outcomes)[:20]}..."
        return self.outcomes[name][0]

    def message(self, name: str) -> str:
        return self.outcomes[name][1]

    def of(self, device: str) -> dict[str, str]:
        return {n: o for n, (o, _m) in self.outcomes.items() if f"[{device}" in n}


def _outcomes(report: Path) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "") + "\n" + (child.text or "")
        found[case.get("name", "")] = (outcome, message)
    return found


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> KitRun:
    report = tmp_path_factory.mktemp("kit") / "kit.xml"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               DSRT_PLUGINS="cpu")  # the fixtures, and cpu:0 for the copy between devices; nothing else
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "dsrt.testing", "--dsrt-backend", ",".join(BACKENDS),
         "--dsrt-plugin", "kit_fixtures.backends:PLUGIN", "-p", "no:cacheprovider", "-q", "-rs",
         f"--junitxml={report}"],
        capture_output=True, text=True, env=env, timeout=300, cwd=HERE)
    assert report.exists(), res.stdout[-3000:] + res.stderr[-3000:]
    return KitRun(res.returncode, res.stdout, _outcomes(report))


def test_the_kit_fails_exactly_the_three_bugs(kit: KitRun) -> None:
    failed = sorted(n for n, (o, _m) in kit.outcomes.items() if o == "failed")
    assert kit.returncode == 1, kit.stdout[-3000:]
    assert failed == [
        "test_dlpack_export_outlives_the_array[kitleak:0]",
        "test_plugin_kernel_against_reference[kitwrong:0-kitfix_softsign-float32]",
        "test_work_is_ordered_across_streams_by_events[kitunordered:0]",
    ], f"failed: {failed}\n" + "\n".join(kit.message(n)[:800] for n in failed)


def test_correct_backends_pass(kit: KitRun) -> None:
    for device in ("kitgood:0", "kitasync:0"):
        outcomes = kit.of(device)
        assert "failed" not in outcomes.values(), {n: kit.message(n)[:500] for n, o in outcomes.items() if o == "failed"}
        assert list(outcomes.values()).count("passed") >= 12, outcomes
    # The new checks ran (not skipped) where they apply.
    assert kit.outcome("test_dlpack_export_outlives_the_array[kitgood:0]") == "passed"
    assert kit.outcome("test_plugin_kernel_against_reference[kitgood:0-kitfix_softsign-float32]") == "passed"
    assert kit.outcome("test_work_is_ordered_across_streams_by_events[kitasync:0]") == "passed"


def test_dlpack_export_that_does_not_keep_the_array_alive_fails(kit: KitRun) -> None:
    name = "test_dlpack_export_outlives_the_array[kitleak:0]"
    assert kit.outcome(name) == "failed"
    assert "kitleak:0" in kit.message(name) and "changed after the array was dropped" in kit.message(name)
    assert kit.outcome("test_dlpack[kitleak:0]") == "passed"  # what the kit checked before: not enough


def test_plugin_kernel_that_disagrees_with_its_reference_fails(kit: KitRun) -> None:
    name = "test_plugin_kernel_against_reference[kitwrong:0-kitfix_softsign-float32]"
    assert kit.outcome(name) == "failed"
    message = kit.message(name)
    assert "kitfix_softsign (a plugin kernel) disagrees with its reference" in message
    assert "float32 (4097,)" in message  # the case is named: dtype and input shape
    assert kit.outcome("test_kernel_against_reference[kitwrong:0-add-float32]") == "passed"


def test_async_device_whose_events_do_not_wait_fails(kit: KitRun) -> None:
    name = "test_work_is_ordered_across_streams_by_events[kitunordered:0]"
    assert kit.outcome(name) == "failed"
    assert "waiting on the event did not wait for the launch" in kit.message(name)
    assert kit.outcome("test_streams_and_events[kitunordered:0]") == "passed"  # the older check misses it
    reason = kit.message("test_work_is_ordered_across_streams_by_events[kitgood:0]")
    assert kit.outcome("test_work_is_ordered_across_streams_by_events[kitgood:0]") == "skipped"
    assert "kitgood:0 is synchronous" in reason


def test_unclaimed_kernels_are_skipped_with_the_reason(kit: KitRun) -> None:
    assert re.search(r"^SKIPPED \[1\] \S*test_conformance\.py: kitgood:0 does not implement softmax for float32$",
                     kit.stdout, re.MULTILINE), kit.stdout[-3000:]
    assert "kitasync:0 does not implement add for int32" in kit.stdout
    prefix = "test_kernel_against_reference["
    for backend, claims in CLAIMS.items():
        seen = 0
        for name, (outcome, message) in kit.outcomes.items():
            if not name.startswith(f"{prefix}{backend}:0-"):
                continue
            kernel, _, dtype = name[len(prefix) + len(backend) + 3:-1].partition("-")
            seen += 1
            if (kernel, dtype) in claims:
                assert outcome == "passed", (name, message[:500])
            else:
                assert outcome == "skipped", name
                assert (f"{backend}:0 does not implement {kernel} for {dtype}" in message
                        or f"{backend}:0 holds none of the dtypes {kernel} is defined for" in message), message
        assert seen > len(claims), f"{backend}: only {seen} kernel params"
    assert kit.outcome("test_plugin_kernel_against_reference[kitasync:0-none]") == "skipped"
    assert "kitasync:0 has no kernels beyond the standard set" in kit.message(
        "test_plugin_kernel_against_reference[kitasync:0-none]")


def test_a_plugin_option_that_cannot_load_is_a_usage_error() -> None:
    from dsrt.testing.plugin import _load_plugin

    with pytest.raises(pytest.UsageError, match=re.escape("--dsrt-plugin kit_fixtures.nosuch:PLUGIN: cannot load it")):
        _load_plugin("kit_fixtures.nosuch:PLUGIN")
    with pytest.raises(pytest.UsageError, match="AttributeError"):
        _load_plugin("kit_fixtures.backends:NOSUCH")
