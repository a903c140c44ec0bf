#!/usr/bin/env bash
# Offline smoke test of .tools/bin: pulumi CLI + Python language host + dynamic-provider plugin.
# Makes a throwaway project (its venv is a symlink to the repo's venv, which needs the PyPI `pulumi`
# package), runs preview, up and destroy against a file backend, and checks no plugin was installed.
#   bash toolchain/smoke.sh            (after `bash toolchain/build.sh` and `make venv`)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SMOKE_VENV:-$root/venv}"
[ -x "$venv/bin/python" ] || { echo "smoke: no venv at $venv (make venv)" >&2; exit 1; }
"$venv/bin/python" -c 'import pulumi' || { echo "smoke: the PyPI pulumi package is not in $venv" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/proj" "$tmp/state" "$tmp/home"
ln -s "$venv" "$tmp/proj/venv"
cat >"$tmp/proj/Pulumi.yaml" <<'EOF'
name: toolchain-smoke
runtime:
  name: python
  options:
    toolchain: pip
    virtualenv: venv
EOF
cat >"$tmp/proj/__main__.py" <<'EOF'
import subprocess
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class Echo(ResourceProvider):
    def create(self, props):
        out = subprocess.run(["echo", props["msg"]], check=True, capture_output=True, text=True)
        return CreateResult(id_="echo", outs={"msg": props["msg"], "stdout": out.stdout.strip()})


class EchoCmd(Resource):
    stdout: pulumi.Output[str]

    def __init__(self, name, msg, opts=None):
        super().__init__(Echo(), name, {"msg": msg, "stdout": None}, opts)


pulumi.export("stdout", EchoCmd("hi", pulumi.Config().require("msg")).stdout)
EOF

export PATH="$root/.tools/bin:$PATH" PULUMI_HOME="$tmp/home" PULUMI_BACKEND_URL="file://$tmp/state" \
  PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true \
  PULUMI_CONFIG_PASSPHRASE=smoke
cd "$tmp/proj"
pulumi version
pulumi stack init smoke >/dev/null 2>&1
pulumi config set msg hello
pulumi preview >"$tmp/preview.log" 2>&1 || { cat "$tmp/preview.log"; exit 1; }
pulumi up --yes >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; exit 1; }
out="$(pulumi stack output stdout)"
[ "$out" = hello ] || { echo "smoke: expected stdout 'hello', got '$out'" >&2; cat "$tmp/up.log"; exit 1; }
pulumi destroy --yes >"$tmp/destroy.log" 2>&1 || { cat "$tmp/destroy.log"; exit 1; }
[ ! -d "$tmp/home/plugins" ] || { echo "smoke: a plugin was installed into PULUMI_HOME" >&2; ls -R "$tmp/home/plugins"; exit 1; }
echo "smoke: preview, up (stdout=$out), destroy OK; no plugin installed"
