"""Integration tier: real nginx + keepalived in network namespaces (root only)."""

import os
import pwd
import shutil

import pytest

from model.render import SCRIPT_USER
from tests.integration.harness import Lab, become_subreaper, sweep_stale


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nginx", "keepalived", "curl", "nft"):
        if not shutil.which(tool):
            return f"{tool} is not installed (make deps)"
    for user in (SCRIPT_USER, "www-data"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user} is missing (make deps)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _host_ready():
    why = _missing()
    if why:
        pytest.skip(why)
    become_subreaper()
    sweep_stale()


@pytest.fixture
def lab_factory():
    """make(settings, auth_passes=None) -> a running Lab; every lab is torn down after the test, pass or fail."""
    labs: list[Lab] = []

    def make(settings, **kw) -> Lab:
        lab = Lab(settings, **kw)
        labs.append(lab)  # before up(): a half-built lab is torn down too
        return lab.up()

    yield make
    for lab in labs:
        lab.down()
