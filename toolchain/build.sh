#!/usr/bin/env bash
# Build the pinned Pulumi toolchain from Go modules into .tools/bin (git-ignored).
#
#   bash toolchain/build.sh          (what `make toolchain` runs)
#
# Every pin lives in a separate wrapper Go module under toolchain/ (go.mod + go.sum committed), so
# minimal version selection never mixes the pins of two tools. Binaries are built once per machine
# into ${HACLUSTER_CACHE:-~/.cache/hacluster}/tools/<hash>/bin, where <hash> covers every file under
# toolchain/ and the Go version; a clone whose .tools/stamp holds that hash does nothing.
#
# Checksums: sum.golang.org cannot be reached from here, so GOSUMDB=off and the committed go.sum
# files are the pin: -mod=readonly makes the go command verify every module zip against them and
# refuse to add or change anything. To change a pin: edit the wrapper's go.mod, run
# `GOSUMDB=off go mod tidy` in it, review and commit go.mod + go.sum.
#
# Not built, because the Go module proxy reachable here refuses these modules (HTTP 403 "This module
# version is not available" for every version, checked 2026-11-25):
#   pulumi-resource-libvirt  github.com/pulumi/pulumi-libvirt/provider (and terraform-provider-libvirt):
#     toolchain/provider-libvirt is this project's own implementation instead: the subset of the PyPI
#     pulumi_libvirt 0.5.4 SDK the program uses (Network, Pool, Volume, CloudInitDisk, Domain; reports
#     version 0.5.4), on go-libvirt and libvirtxml, running mkisofs and xsltproc (see its main.go).
#   pulumi-resource-command  github.com/pulumi/pulumi-command/provider (and pulumi-go-provider):
#     toolchain/provider-command is this project's own implementation instead (command:local:Command;
#     reports version 1.2.1, the PyPI pulumi_command SDK's).
#   upstream pulumi-language-python (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3):
#     toolchain/language-python is this project's own minimal language host instead.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
t0=$(date +%s%N)

elapsed() { # seconds since $1 (ns), one decimal
  local ns=$(( $(date +%s%N) - $1 ))
  printf '%d.%d' $(( ns / 1000000000 )) $(( ns / 100000000 % 10 ))
}

command -v go >/dev/null || { echo "toolchain: go is not installed (apt-get install golang / see README)" >&2; exit 1; }

# --- what to build --------------------------------------------------------------------------------
# The Go that builds everything: the machine's own when new enough, otherwise the go command fetches
# this one from the module proxy (golang.org/toolchain). Per-module overrides: GOTOOLCHAIN_<dir>.
go_min="1.26.6"              # highest `go` line among the wrapper modules
go_fallback="go1.26.8"
GOTOOLCHAIN_cli=""           # e.g. "go1.27.3" if a pin ever needs a different Go than the rest
GOTOOLCHAIN_language_python=""
GOTOOLCHAIN_provider_command=""
GOTOOLCHAIN_provider_libvirt=""

bins=(pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python
  pulumi-resource-command pulumi-resource-libvirt)

# --- cache key ------------------------------------------------------------------------------------
local_go="$(GOTOOLCHAIN=local go env GOVERSION)"   # e.g. go1.26.8
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
if ver_ge "${local_go#go}" "$go_min"; then
  default_toolchain="local"
  go_used="$local_go"
else
  default_toolchain="$go_fallback"
  go_used="$go_fallback"
fi

hash="$(
  {
    cd "$here"
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "go=$go_used"
  } | sha256sum | cut -c1-20
)"

tools="$root/.tools"
stamp="$tools/stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
  ok=1
  for b in "${bins[@]}"; do [ -x "$tools/bin/$b" ] || ok=0; done
  if [ "$ok" = 1 ]; then
    echo "toolchain: up to date ($hash) in $(elapsed "$t0") s"
    exit 0
  fi
fi

cache_root="${HACLUSTER_CACHE:-$HOME/.cache/hacluster}/tools"
cache="$cache_root/$hash"
mkdir -p "$cache_root"

# One build at a time per machine (2 cores), and a clone waiting here reuses the other's result.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  echo "toolchain: waiting for another build ($cache_root/.lock)"
  flock 9
fi

# --- build ----------------------------------------------------------------------------------------
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOSUMDB=off          # sum.golang.org is unreachable here: the committed go.sum files are the pin
export GOTOOLCHAIN="$default_toolchain"

build_one() { # <wrapper dir> <output name> <package> <ldflags> <version shown>
  local dir="$1" out="$2" pkg="$3" ldflags="$4" t1 log var tc
  var="GOTOOLCHAIN_${dir//-/_}"
  tc="${!var:-$GOTOOLCHAIN}"
  t1=$(date +%s%N)
  log="$work/$out.log"
  echo "toolchain: [$((++step))/$nsteps] building $out (toolchain/$dir) ..."
  # A heartbeat while go builds (the CLI alone takes minutes on 2 cores, silently).
  ( while sleep 30; do echo "toolchain:   ... still building $out ($(elapsed "$t1") s)"; done ) &
  local beat=$!
  if ! (cd "$here/$dir" && GOTOOLCHAIN="$tc" go build -trimpath -ldflags "-s -w $ldflags" \
        -o "$work/bin/$out" "$pkg") >"$log" 2>&1; then
    kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
    echo "toolchain: FAILED building $out in toolchain/$dir (GOTOOLCHAIN=$tc) after $(elapsed "$t1") s:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  kill "$beat" 2>/dev/null; wait "$beat" 2>/dev/null || true
  printf '  done %-27s %-12s %4s MB  %6s s  (toolchain/%s, %s)\n' "$out" "${5:-}" \
    "$(( $(stat -c %s "$work/bin/$out") / 1048576 ))" "$(elapsed "$t1")" "$dir" \
    "$( [ "$tc" = local ] && echo "$local_go" || echo "$tc")"
}

mod_version() { # <wrapper dir> <module path>
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}
mod_dir() { # <wrapper dir> <module path>; downloads (verified against go.sum) when needed
  (cd "$here/$1" && go mod download -json "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
}

if [ -f "$cache/.complete" ]; then
  echo "toolchain: reusing $cache"
else
  echo "toolchain: building $hash into $cache (Go $go_used; 4 binaries, ~4 min on 2 cores when the Go caches are cold)"
  step=0
  nsteps=4
  work="$cache_root/.tmp.$hash.$$"
  rm -rf "$work"
  mkdir -p "$work/bin"
  trap 'rm -rf "$work"' EXIT

  # 1. Pulumi CLI.
  v="$(mod_version cli github.com/pulumi/pulumi/pkg/v3)"
  build_one cli pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$v" "$v"

  # 2. Python language host (our own; see toolchain/language-python/main.go) and the upstream
  #    scripts it and the engine run, copied from the sdk/v3 module it is built against.
  v="$(mod_version language-python github.com/pulumi/pulumi/sdk/v3)"
  build_one language-python pulumi-language-python . "-X main.version=${v#v}" "$v (own)"
  sdk="$(mod_dir language-python github.com/pulumi/pulumi/sdk/v3)"
  [ -n "$sdk" ] && [ -d "$sdk/python" ] || { echo "toolchain: sdk/v3 module not found" >&2; exit 1; }
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$work/bin/"
  install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$work/bin/"
  printf '  %-32s %-12s %9s  (copied from sdk/v3 module)\n' pulumi-language-python-exec "$v" "script"
  printf '  %-32s %-12s %9s  (copied from sdk/v3 module; dynamic providers)\n' pulumi-resource-pulumi-python "$v" "script"

  # 3. Command provider (our own; see toolchain/provider-command/main.go), for the PyPI pulumi_command SDK.
  build_one provider-command pulumi-resource-command . "" "1.2.1 (own)"

  # 4. libvirt provider (our own; see toolchain/provider-libvirt/main.go), for the PyPI pulumi_libvirt
  #    SDK: the version must be the SDK's (its pulumi-plugin.json says 0.5.4).
  build_one provider-libvirt pulumi-resource-libvirt . "-X main.version=0.5.4" "0.5.4 (own)"

  echo "$hash" >"$work/.complete"
  rm -rf "$cache"
  mv "$work" "$cache"
  trap - EXIT
fi

# --- install into .tools/bin ----------------------------------------------------------------------
mkdir -p "$tools/bin"
for b in "${bins[@]}"; do
  rm -f "$tools/bin/$b"
  ln "$cache/bin/$b" "$tools/bin/$b" 2>/dev/null || cp -p "$cache/bin/$b" "$tools/bin/$b"
done
echo "$hash" >"$stamp"
# Keep the 3 most recently built toolchains of this machine (each ~140 MB); clones on other commits
# that lose theirs just rebuild (seconds with a warm Go build cache).
ls -1dt "$cache_root"/*/ 2>/dev/null | tail -n +4 | while read -r old; do
  [ "${old%/}" = "$cache" ] || rm -rf "${old%/}"
done
echo "toolchain: .tools/bin ready ($hash) in $(elapsed "$t0") s"
