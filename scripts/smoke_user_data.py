"""The user-data of the smoke VM, for scripts/boot-smoke.sh, with the smoke's own host key (the smoke's
ssh pins it, as every SSH client of the project does).

    python scripts/smoke_user_data.py NODE PUBKEY_FILE SUBNET HOSTKEY_FILE   (SUBNET e.g. 192.168.120)
    python scripts/smoke_user_data.py --host-key USER_DATA HOSTKEY_FILE      (the minimal user-data)

NODE (SMOKE_NODE=web01|lb02): the real user-data of that dev-stack node. Renders Pulumi.dev.yaml's config
with its 192.168.81 addresses moved to SUBNET (so the node's firewall lets the smoke's SSH in), the
node's name, the smoke's public key and host key; prints the user-data and, on stderr, the admin user to
log in as. The VRRP password is a fixed test value. --host-key: USER_DATA (the minimal one) with the host
key added, dumped again from data.
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import render  # noqa: E402
from model.settings import load  # noqa: E402


def host_key(path: str) -> tuple[str, str]:
    return Path(path).read_text(), Path(f"{path}.pub").read_text().strip()


if sys.argv[1] == "--host-key":
    doc = yaml.safe_load(Path(sys.argv[2]).read_text())
    print("#cloud-config\n" + yaml.safe_dump({**doc, **render.host_key_doc(host_key(sys.argv[3]))}, sort_keys=False),
          end="")
    sys.exit(0)
node_name, key_file, subnet, host_key_file = sys.argv[1:5]
text = (ROOT / "Pulumi.dev.yaml").read_text().replace("192.168.81.", f"{subnet}.")
raw = {k.removeprefix("hacluster:"): v for k, v in yaml.safe_load(text)["config"].items()}
settings = load(raw, "smoke", ROOT)
node = next(n for n in settings.nodes if n.name == node_name)
print(render.user_data(settings, node, "smoke123" if node.role == "lb" else None,
                       [Path(key_file).read_text().strip()], host_key(host_key_file)))
print(settings.vm.admin_user, file=sys.stderr)
