"""StackSecrets: the stack's SSH key pair, each node's SSH host key pair (ed25519) and the VRRP password,
made once per stack (a host key once per node) and kept as secrets.

They are made by command resources on the deploy host (ssh-keygen, /dev/urandom): the values live
only in the stack state, encrypted, and never in a rendered file, a log or the repository.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_command import local

KEYGEN = ('set -e; d=$(mktemp -d); trap \'rm -rf "$d"\' EXIT; '
          'ssh-keygen -q -t ed25519 -N "" -C "hacluster-{stack}" -f "$d/id"; cat "$d/id" "$d/id.pub"')
# A node's host key: the same generator; the public half is pinned by every SSH client of the project.
# (The stack and node names have grammars: model.grammar STACK, HOSTNAME.)
HOST_KEYGEN = ('set -e; d=$(mktemp -d); trap \'rm -rf "$d"\' EXIT; '
               'ssh-keygen -q -t ed25519 -N "" -C "hacluster-{stack}-{node}-host" -f "$d/id"; cat "$d/id" "$d/id.pub"')
PASSGEN = "set -e; tr -dc 'A-Za-z0-9' </dev/urandom | head -c 8"


@dataclass
class StackSecretsArgs:
    stack: str
    """Stack name (the key's comment)."""
    vrrp_auth_pass: str | None
    """The configured VRRP password, or None to generate one (or with VRRPv3, see `need_vrrp_pass`)."""
    need_vrrp_pass: bool
    """False with VRRPv3, which has no authentication."""
    nodes: tuple[str, ...] = ()
    """The nodes' names: one host key pair each (command `<name>-host-key-<node>`)."""


@dataclass
class HostKey:
    private: pulumi.Output[str]
    """The node's private host key file (a secret: it reaches the node through its user-data only)."""
    public: pulumi.Output[str]
    """'ssh-ed25519 <body>': what the project's SSH clients pin (not secret)."""


def split_keypair(text: str) -> tuple[str, str]:
    """ssh-keygen output (private key file, then public key line) -> (private, public)."""
    end = "-----END OPENSSH PRIVATE KEY-----"
    private, _, rest = text.partition(end)
    return private + end + "\n", rest.strip().splitlines()[-1]


class StackSecrets(pulumi.ComponentResource):
    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]
    vrrp_auth_pass: pulumi.Output[str] | None
    host_keys: dict[str, HostKey]

    def __init__(self, name: str, args: StackSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("hacluster:index:StackSecrets", name, {}, opts)
        secret_out = pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout"])
        key = local.Command(f"{name}-ssh-key", create=KEYGEN.format(stack=args.stack),
                            logging=local.Logging.NONE, opts=secret_out)
        pair = key.stdout.apply(split_keypair)
        self.private_key = pulumi.Output.secret(pair.apply(lambda p: p[0]))
        self.public_key = pulumi.Output.unsecret(pair.apply(lambda p: p[1]))
        self.host_keys = {}
        for node in args.nodes:
            made = local.Command(f"{name}-host-key-{node}", create=HOST_KEYGEN.format(stack=args.stack, node=node),
                                 logging=local.Logging.NONE, opts=secret_out)
            host = made.stdout.apply(split_keypair)
            self.host_keys[node] = HostKey(private=pulumi.Output.secret(host.apply(lambda p: p[0])),
                                           public=pulumi.Output.unsecret(host.apply(lambda p: " ".join(p[1].split()[:2]))))
        self.vrrp_auth_pass = None
        if args.need_vrrp_pass:
            if args.vrrp_auth_pass:
                self.vrrp_auth_pass = pulumi.Output.secret(args.vrrp_auth_pass)
            else:
                gen = local.Command(f"{name}-vrrp-pass", create=PASSGEN, logging=local.Logging.NONE, opts=secret_out)
                self.vrrp_auth_pass = pulumi.Output.secret(gen.stdout.apply(str.strip))
        self.register_outputs({"publicKey": self.public_key,
                               "hostKeys": {n: k.public for n, k in self.host_keys.items()}})
