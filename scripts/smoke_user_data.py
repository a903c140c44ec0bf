"""The real user-data of one dev-stack node, for scripts/boot-smoke.sh (SMOKE_NODE=web01|lb02).

    python scripts/smoke_user_data.py NODE PUBKEY_FILE SUBNET   (SUBNET e.g. 192.168.120)

Renders Pulumi.dev.yaml's config with its 192.168.81 addresses moved to SUBNET (so the node's firewall
lets the smoke's SSH in), the node's name and the smoke's public key; prints the user-data and, on
stderr, the admin user to log in as. The VRRP password is a fixed test value.
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import render  # noqa: E402
from model.settings import load  # noqa: E402

node_name, key_file, subnet = sys.argv[1:4]
text = (ROOT / "Pulumi.dev.yaml").read_text().replace("192.168.81.", f"{subnet}.")
raw = {k.removeprefix("hacluster:"): v for k, v in yaml.safe_load(text)["config"].items()}
settings = load(raw, "smoke", ROOT)
node = next(n for n in settings.nodes if n.name == node_name)
print(render.user_data(settings, node, "smoke123" if node.role == "lb" else None,
                       [Path(key_file).read_text().strip()]))
print(settings.vm.admin_user, file=sys.stderr)
