"""The secrets passphrase: the built-in one only for a lab stack on the local file backend (model/passphrase.py),
chosen by the Makefile's wrapper and refused again inside the program (__main__.py)."""

import json
import subprocess
import sys

import pytest

from model import passphrase as pp
from tests.conftest import ROOT

FILE = "file:///srv/hacluster/.state"
PG = "postgres://ops:s3cret@db.example.org:5432/pulumi"


@pytest.mark.parametrize(("lab", "backend", "allowed"), [
    ("halab", FILE, True), ("halab", "file://~", True),
    (None, FILE, False), ("", FILE, False),
    ("halab", PG, False), ("halab", "s3://bucket", False), ("halab", "", False),
])
def test_the_builtin_passphrase_is_for_lab_stacks_on_the_file_backend(lab, backend, allowed):
    assert pp.builtin_allowed(lab, backend) is allowed


def test_a_lab_stack_on_the_file_backend_gets_the_builtin_one_unless_the_user_set_one():
    assert pp.choose("halab", FILE, {}) == {"PULUMI_CONFIG_PASSPHRASE": pp.BUILTIN}
    assert pp.choose("halab", FILE, {"PULUMI_CONFIG_PASSPHRASE": ""}) == {"PULUMI_CONFIG_PASSPHRASE": pp.BUILTIN}
    assert pp.choose("halab", FILE, {"PULUMI_CONFIG_PASSPHRASE": "mine"}) == {}
    assert pp.choose("halab", FILE, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/root/pass"}) == {}


@pytest.mark.parametrize(("lab", "backend", "words"), [
    (None, FILE, "labNetns ''"), ("halab", PG, "the postgres:// backend"), ("halab", "", "an unknown backend")])
def test_any_other_stack_needs_the_users_passphrase_and_is_told_how_to_set_one(lab, backend, words):
    for env in ({}, {"PULUMI_CONFIG_PASSPHRASE": pp.BUILTIN}):
        with pytest.raises(pp.PassphraseError) as e:
            pp.choose(lab, backend, env)
        line = str(e.value)
        assert "\n" not in line and words in line and "export PULUMI_CONFIG_PASSPHRASE=..." in line, line
        assert "PULUMI_CONFIG_PASSPHRASE_FILE" in line and "pulumi stack init --secrets-provider" in line
        assert "s3cret" not in line  # the backend is named by its scheme only
    assert pp.choose(lab, backend, {"PULUMI_CONFIG_PASSPHRASE": "team-secret"}) == {}
    assert pp.choose(lab, backend, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/run/pass"}) == {}
    assert pp.choose(lab, backend, {}, secrets_provider="awskms://alias/hacluster") == {}


def test_the_program_refuses_the_builtin_passphrase_outside_a_lab_stack_on_the_file_backend():
    builtin = {"PULUMI_CONFIG_PASSPHRASE": pp.BUILTIN}
    assert pp.refusal("halab", FILE, builtin) is None
    assert pp.refusal(None, FILE, {"PULUMI_CONFIG_PASSPHRASE": "mine"}) is None
    assert pp.refusal(None, PG, {}) is None  # no passphrase at all: pulumi itself asks for one
    for lab, backend in ((None, FILE), ("halab", PG)):
        line = pp.refusal(lab, backend, builtin)
        assert line and "\n" not in line and "export PULUMI_CONFIG_PASSPHRASE=..." in line, line
    main = (ROOT / "__main__.py").read_text()
    assert main.index("refusal(settings.lab_netns") < main.index("HaCluster(")  # before any resource


def test_backend_url_falls_back_to_the_login_of_pulumi_home(tmp_path):
    assert pp.backend_url({"PULUMI_BACKEND_URL": PG, "PULUMI_HOME": str(tmp_path)}) == PG
    assert pp.backend_url({"PULUMI_HOME": str(tmp_path)}) == ""
    (tmp_path / "credentials.json").write_text(json.dumps({"current": FILE, "accounts": {}}))
    assert pp.backend_url({"PULUMI_HOME": str(tmp_path)}) == FILE


def test_stack_facts_read_the_stack_file(tmp_path):
    (tmp_path / "Pulumi.real.yaml").write_text("secretsprovider: awskms://alias/x\nconfig:\n  hacluster:labNetns: ''\n")
    (tmp_path / "Pulumi.nul.yaml").write_text("config:\n  hacluster:labNetns: null\n")
    assert pp.stack_facts("real", tmp_path) == ("", "awskms://alias/x")
    assert pp.stack_facts("nul", tmp_path) == (None, None)
    assert pp.stack_facts("new", tmp_path) == ("halab", None)  # no file yet: the model's default
    assert pp.stack_facts("dev") == ("halab", None) and pp.stack_facts("prod")[0] == ""
    with pytest.raises(pp.PassphraseError):
        pp.stack_facts("../x", tmp_path)


def wrapper(stack: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "model.passphrase", stack, "--", "sh", "-c", 'echo "$PULUMI_CONFIG_PASSPHRASE"']
    return subprocess.run(cmd, cwd=ROOT, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=60)


def test_the_makefile_runs_pulumi_through_the_wrapper():
    r = wrapper("dev", {"PULUMI_BACKEND_URL": FILE})
    assert (r.returncode, r.stdout) == (0, f"{pp.BUILTIN}\n"), r.stderr
    r = wrapper("prod", {"PULUMI_BACKEND_URL": FILE})
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: no secrets passphrase for a stack with labNetns ''"), r.stderr
    r = wrapper("dev", {"PULUMI_BACKEND_URL": PG})
    assert r.returncode == 1 and "postgres://" in r.stderr, r.stderr
    assert wrapper("prod", {"PULUMI_BACKEND_URL": PG, "PULUMI_CONFIG_PASSPHRASE": "x"}).stdout == "x\n"
    makefile = (ROOT / "Makefile").read_text()
    assert "export PULUMI_CONFIG_PASSPHRASE" not in makefile
    recipes = [ln.strip() for ln in makefile.splitlines() if ln.startswith("\t")]
    for ln in recipes:
        for part in [*ln.split("$$(")[1:], ln]:
            if part.startswith("pulumi ") and not part.startswith("pulumi stack select"):
                pytest.fail(f"a pulumi command outside $(WITH_PASSPHRASE): {ln}")
    assert sum("$(WITH_PASSPHRASE) pulumi" in ln for ln in recipes) == 5
    assert sum("-m model.passphrase --lab --" in ln for ln in recipes) == 2  # the e2e tests, the bench


def test_is_lab_tells_the_makefile_whether_to_start_the_lab(capsys):
    """`make up STACK=prod` (labNetns '') must not start the lab: it refuses beside a libvirtd of the user's."""
    assert pp.main(["--is-lab", "dev"]) == 0
    assert pp.main(["--is-lab", "prod"]) == 1
    assert pp.main(["--is-lab", "no such/stack"]) == 2
    assert "stack 'no such/stack'" in capsys.readouterr().err
