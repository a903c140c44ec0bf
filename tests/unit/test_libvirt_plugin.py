"""The project's libvirt plugin (toolchain/provider-libvirt): its Go unit tests, among them the one that
compares its GetSchema with the PyPI SDK pulumi_libvirt 0.5.4 for every resource and property the
program uses (schema_test.go, reading the SDK through testdata/sdk_schema.py with this venv's Python).
The live tests there (a libvirtd) run only with PROVIDER_LIBVIRT_LIVE=1."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

PLUGIN = ROOT / "toolchain" / "provider-libvirt"


def test_plugin_go_tests_pass_and_its_schema_matches_the_sdk():
    if shutil.which("go") is None:
        pytest.skip("go is not installed (make toolchain needs it)")
    env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOSUMDB": "off", "CGO_ENABLED": "0"}
    env.pop("PROVIDER_LIBVIRT_LIVE", None)
    r = subprocess.run(["go", "test", "-count=1", "-v", "./..."], cwd=PLUGIN, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "--- PASS: TestSchemaMatchesSDK" in r.stdout, r.stdout[-4000:]
