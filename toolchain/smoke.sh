#!/usr/bin/env bash
# Offline smoke test of .tools/bin: pulumi CLI + Python language host + dynamic-provider plugin +
# the project's own command provider (toolchain/provider-command).
# Makes throwaway projects (their venv is a symlink to the repo's venv, which needs the PyPI `pulumi`
# and `pulumi_command` packages), runs preview, up and destroy against a file backend, and checks no
# plugin was installed.
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
echo "smoke: preview, up (stdout=$out), destroy OK"

# --- command provider (command:local:Command) -----------------------------------------------------
# echo / dependent (unknown in preview) / secret env + logging none / triggers -> replace,
# create -> update / a failing command fails `pulumi up` with the reason / delete command on destroy.
"$venv/bin/python" -c 'import pulumi_command' || { echo "smoke: pulumi_command is not in $venv" >&2; exit 1; }
mkdir -p "$tmp/cmd"
ln -s "$venv" "$tmp/cmd/venv"
sed 's/^name: toolchain-smoke$/name: toolchain-smoke-command/' "$tmp/proj/Pulumi.yaml" >"$tmp/cmd/Pulumi.yaml"
cat >"$tmp/cmd/__main__.py" <<'EOF'
import pulumi
from pulumi_command import local

cfg = pulumi.Config()
echo = local.Command("echo", create=f"echo {cfg.require('msg')}", triggers=[cfg.require("trigger")],
                     delete=f'echo "gone:$PULUMI_COMMAND_STDOUT" > {cfg.require("marker")}')
dep = local.Command("dep", create=echo.stdout.apply(lambda s: f"echo got-{s}"))
sec = local.Command("secret", create='echo "pw=$PW"', environment={"PW": pulumi.Output.secret("s3cr3t-smoke")},
                    logging=local.Logging.NONE, opts=pulumi.ResourceOptions(additional_secret_outputs=["stdout"]))
if cfg.get_bool("fail"):
    local.Command("fails", create="echo about to fail; echo bad thing happened >&2; exit 3")
pulumi.export("echo", echo.stdout)
pulumi.export("dep", dep.stdout)
pulumi.export("secret", sec.stdout)
EOF
cd "$tmp/cmd"
cmd_up() { # <log name> <expected summary regex>
  pulumi up --yes >"$tmp/$1.log" 2>&1 || { cat "$tmp/$1.log"; echo "smoke: command provider: up ($1) failed" >&2; exit 1; }
  grep -Eq "$2" "$tmp/$1.log" || { cat "$tmp/$1.log"; echo "smoke: command provider: up ($1): no '$2'" >&2; exit 1; }
}
cmd_out() { # <output> <expected>
  local got; got="$(pulumi stack output "$1")"
  [ "$got" = "$2" ] || { echo "smoke: command provider: output $1 is '$got', expected '$2'" >&2; exit 1; }
}
pulumi stack init smoke >/dev/null 2>&1
pulumi config set msg hello
pulumi config set trigger t1
pulumi config set marker "$tmp/deleted"
pulumi preview >"$tmp/cmd-preview.log" 2>&1 || { cat "$tmp/cmd-preview.log"; exit 1; }
cmd_up cmd-up '\+ 4 created'
cmd_out echo hello
cmd_out dep got-hello
pulumi stack export >"$tmp/cmd-state.json"
if grep -q s3cr3t-smoke "$tmp/cmd-state.json" "$tmp/cmd-up.log"; then
  echo "smoke: command provider: the secret is in plain text in the state or the up log" >&2; exit 1
fi
"$venv/bin/python" - "$tmp/cmd-state.json" <<'EOF' || { echo "smoke: command provider: secret stdout not encrypted" >&2; exit 1; }
import json, sys
res = {r["urn"].rsplit("::", 1)[1]: r for r in json.load(open(sys.argv[1]))["deployment"]["resources"]}
outs = res["secret"]["outputs"]
assert "ciphertext" in outs["stdout"] and "ciphertext" in outs["environment"]["PW"], outs
EOF
pulumi config set trigger t2
cmd_up cmd-replace '\+-1 replaced'
pulumi config set msg hi
cmd_up cmd-update '~ 2 updated'
cmd_out dep got-hi
pulumi config set fail true
if pulumi up --yes >"$tmp/cmd-fail.log" 2>&1; then
  echo "smoke: command provider: a command exiting 3 did not fail pulumi up" >&2; exit 1
fi
grep -q 'create command failed with exit code 3' "$tmp/cmd-fail.log" && grep -q 'bad thing happened' "$tmp/cmd-fail.log" \
  || { cat "$tmp/cmd-fail.log"; echo "smoke: command provider: failure reason not shown" >&2; exit 1; }
pulumi config rm fail
pulumi destroy --yes >"$tmp/cmd-destroy.log" 2>&1 || { cat "$tmp/cmd-destroy.log"; exit 1; }
[ "$(cat "$tmp/deleted" 2>/dev/null)" = "gone:hi" ] || { echo "smoke: command provider: delete command did not run" >&2; exit 1; }
echo "smoke: command provider: preview, up, secret stdout encrypted, replace on triggers, update on create, failure reported, destroy OK"

[ ! -d "$tmp/home/plugins" ] || { echo "smoke: a plugin was installed into PULUMI_HOME" >&2; ls -R "$tmp/home/plugins"; exit 1; }
echo "smoke: no plugin installed"
