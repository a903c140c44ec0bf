#!/usr/bin/env bash
# Open the lab's site from the host: forward 127.0.0.1:PORT to VIP:80 inside the lab namespace.
#
#   bash scripts/forward.sh [VIP] [PORT]     # or: make forward; Ctrl-C stops it
#
# VIP defaults to `pulumi stack output vip` when the pulumi CLI is on PATH, else 192.168.81.100;
# PORT defaults to 8080. Only the loopback listener is in the host namespace: each connection is
# relayed by a socat started inside the lab namespace, which is where the VIP exists.
set -euo pipefail

# shellcheck source=scripts/labenv.sh
source "$(dirname "${BASH_SOURCE[0]}")/labenv.sh"

DEFAULT_VIP=192.168.81.100
VIP=${1:-}
PORT=${2:-8080}

if [[ -z "$VIP" ]] && command -v pulumi >/dev/null; then
  VIP=$(pulumi stack output vip 2>/dev/null || true)
fi
VIP=${VIP:-$DEFAULT_VIP}

# Both end up inside a socat address string: accept nothing but an IPv4 address and a port.
[[ "$VIP" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || lab_die "VIP '$VIP' is not an IPv4 address"
if ! [[ "$PORT" =~ ^[0-9]{1,5}$ ]] || ((10#$PORT < 1 || 10#$PORT > 65535)); then
  lab_die "PORT '$PORT' is not a TCP port"
fi
[[ -n "$LAB_NETNS" ]] || lab_die "HACLUSTER_NETNS is empty: no lab namespace to forward into"
[[ "$LAB_NETNS" =~ ^[A-Za-z0-9_.-]+$ ]] || lab_die "netns name '$LAB_NETNS' has unexpected characters"
require_lab_netns_exists
command -v socat >/dev/null || lab_die "socat not found (run: make deps)"

echo "Forwarding http://127.0.0.1:${PORT}/ -> ${VIP}:80 in network namespace ${LAB_NETNS} (Ctrl-C to stop)"
# The double quotes are socat's own: they keep the inner address's colons out of EXEC's parsing.
exec socat "TCP-LISTEN:${PORT},bind=127.0.0.1,fork,reuseaddr" \
  "EXEC:\"ip netns exec ${LAB_NETNS} socat STDIO TCP:${VIP}:80\""
