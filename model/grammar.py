"""Grammars of every string that reaches a config file, a YAML document, a shell line or a libvirt name.

Each check matches the WHOLE value (`re.fullmatch`: a trailing newline never passes) and raises
ValueError with what is allowed. Pure Python: model/config.py wraps these into pydantic types.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct

# A node's hostname (RFC 1123 label, lowercase, at most 31 so "<stack>-<name>" stays a short domain name).
HOSTNAME = re.compile(r"[a-z](?:[a-z0-9-]{0,29}[a-z0-9])?")
HOSTNAME_ALLOWED = "a lowercase hostname: a letter, then letters, digits or '-', not ending in '-', at most 31"

# A Linux user name that useradd accepts without --badname.
USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
# Accounts and groups of the golden image and of Debian's base-passwd: cloud-init would hand one of them
# NOPASSWD sudo and the SSH keys (root, the nginx workers' www-data, keepalived's script user...), or
# fail to create the admin user because a group of that name exists.
RESERVED_USERS = frozenset("""
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody
    _apt systemd-network systemd-resolve systemd-timesync systemd-coredump messagebus sshd polkitd
    keepalived_script nginx tss uuidd dnsmasq libvirt-qemu libvirt-dnsmasq statd _chrony ntp
    adm sudo wheel users staff disk kmem tty shadow utmp video plugdev netdev kvm render input audio
    dialout cdrom floppy tape operator voice src sasl fax dip crontab lpadmin sgx nogroup
""".split())

# A Linux interface name (dev_valid_name: 1..15 bytes, no '/', ':' or whitespace, not '.' or '..'),
# narrowed to characters that need no quoting anywhere (shell, keepalived, nft, XML) and no leading '-'.
IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
IFNAME_ALLOWED = "a Linux interface name: 1..15 letters, digits, '_', '.' or '-' (not starting with '-')"

# A hypervisor's name (a `hypervisors` key, a node's `host`): short, it is part of Pulumi resource names.
HV_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,14}[a-z0-9])?")
HV_NAME_ALLOWED = "a hypervisor name: a lowercase letter, then lowercase letters, digits or '-', not ending in '-', at most 16"

NETNS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
LIBVIRT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ROUTER_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
POOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
PERSISTENCE = re.compile(r"none|ip_hash|cookie:[A-Za-z0-9_]{1,64}")
STACK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
IPV4 = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
CIDR = re.compile(IPV4.pattern + r"(?:/(?:3[0-2]|[12]?[0-9]))?")

# ---- nginx --------------------------------------------------------------------------------------
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
WILDCARD_HOST = re.compile(rf"(?:\*\.)?{HOST.pattern}|{HOST.pattern}\.\*")
SERVER_NAME_ALLOWED = ("host names separated by single spaces (at most 8, each at most 253 characters; "
                       "'*.example.org' or 'example.*' after the first, which is the Host the verifier sends)")

# Sizes as nginx parses them. ngx_parse_size (buffer sizes) knows k and m; ngx_parse_offset
# (client_max_body_size) also g.
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
BODY_SIZE = re.compile(r"(0|[1-9][0-9]{0,12})([kKmMgG]?)")
BUF_SIZE = re.compile(r"([1-9][0-9]{0,8})([kKmM]?)")
BUFFERS = re.compile(r"([0-9]{1,4}) ([1-9][0-9]{0,8}[kKmM]?)")
MAX_BODY = 1 << 40  # 1 TiB
BUF_MIN, BUF_MAX = 1 << 10, 64 << 20  # 1k..64m (below nginx's max_temp_file_size 1024m)


def size_bytes(text: str) -> int:
    m = re.fullmatch(r"([0-9]+)([kKmMgG]?)", text)
    assert m, text
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def human(n: int) -> str:
    for unit, f in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if n % f == 0:
            return f"{n // f}{unit}"
    return str(n)


# A routing regex: a conservative subset that Python's re and nginx's PCRE2 read the same way. No
# backslash, quotes, braces, ';', '$' followed by a name (nginx variables) or '(?' constructs.
ROUTE_REGEX = re.compile(r"[A-Za-z0-9 ._/|()*+?^$\[\]-]{1,200}")
ROUTE_ALLOWED = ("a case-insensitive regex of letters, digits, spaces and . _ / | ( ) * + ? ^ $ [ ] - "
                 "(no backslash, quotes, braces or '(?'), at most 200")


def route_regex(m: str) -> str:
    if not ROUTE_REGEX.fullmatch(m) or "(?" in m or re.search(r"\$[A-Za-z0-9_]", m):
        raise ValueError(ROUTE_ALLOWED)
    try:
        re.compile(m)
    except re.error as e:
        raise ValueError(f"{ROUTE_ALLOWED}; this one does not compile ({e})") from None
    if re.search(r"[*+?]\s*[*]|\(\)|\[\]|\[\^\]", m):
        raise ValueError(f"{ROUTE_ALLOWED}; no stacked quantifiers or empty groups/classes")
    return m


# ---- secrets ------------------------------------------------------------------------------------
# keepalived's parser cuts a line at '#' or '!' and treats braces as block structure; the value is
# rendered in double quotes, so quotes and backslashes are refused as well.
AUTH_PASS = re.compile(r"[A-Za-z0-9%&()*+,./:;<=>?@\[\]^_`|~$-]{1,8}")
AUTH_PASS_ALLOWED = ("1..8 characters: letters, digits and % & ( ) * + , . / : ; < = > ? @ [ ] ^ _ ` | ~ $ - "
                     "(no whitespace, quotes, backslash, braces, '#' or '!')")

# ---- SSH public keys ----------------------------------------------------------------------------
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
SSH_KEY = re.compile(r"(?P<type>[a-z0-9@.-]{1,40}) (?P<body>[A-Za-z0-9+/]{16,16384}={0,2})"
                     r"(?: (?P<comment>[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?))?")
SSH_KEY_ALLOWED = ("one OpenSSH public key line: '<type> <base64> [comment]' with type one of "
                   + ", ".join(SSH_KEY_TYPES) + "; printable ASCII comment, no options")


def ssh_public_key(line: str) -> str:
    """Parse (not pattern-match) an authorized_keys line: one line, a known type, a base64 body that
    decodes and whose embedded type string is the declared one."""
    m = SSH_KEY.fullmatch(line)
    if not m:
        raise ValueError(SSH_KEY_ALLOWED)
    if m["type"] not in SSH_KEY_TYPES:
        raise ValueError(f"unknown key type {m['type']!r}; " + SSH_KEY_ALLOWED)
    try:
        blob = base64.b64decode(m["body"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key body is not valid base64; " + SSH_KEY_ALLOWED) from None
    if len(blob) < 4:
        raise ValueError("the key body is too short to be a key")
    (n,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + n] != m["type"].encode() or len(blob) <= 4 + n:
        raise ValueError(f"the key body does not hold a {m['type']} key (its embedded type differs)")
    return line



# ---- SSH host keys (one ed25519 key per node, made at deploy: components/secrets.py) ----------------------
HOST_KEY_TYPE = "ssh-ed25519"
# The public blob of an ed25519 key: string "ssh-ed25519" + string of 32 bytes = 51 bytes, 68 base64 chars.
HOST_PUBLIC_KEY = re.compile(r"ssh-ed25519 (?P<body>AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43})(?: [\x21-\x7e]{1,200})?")
HOST_PUBLIC_KEY_ALLOWED = "one ed25519 public key line: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI<43 base64> [comment]'"
HOST_PRIVATE_KEY = re.compile(r"-----BEGIN OPENSSH PRIVATE KEY-----\n(?:[A-Za-z0-9+/=]{1,76}\n){1,64}"
                              r"-----END OPENSSH PRIVATE KEY-----\n")
HOST_PRIVATE_KEY_ALLOWED = "an OpenSSH private key file (BEGIN/END OPENSSH PRIVATE KEY lines around base64 lines)"


def host_public_key(line: str) -> str:
    """A node's public host key: ed25519 only; returned as '<type> <body>' (the comment dropped), which is
    what a known_hosts line and cloud-init's ed25519_public take."""
    m = HOST_PUBLIC_KEY.fullmatch(line)
    if not m:
        raise ValueError(HOST_PUBLIC_KEY_ALLOWED)
    ssh_public_key(f"{HOST_KEY_TYPE} {m['body']}")  # the body decodes and embeds its type
    return f"{HOST_KEY_TYPE} {m['body']}"


def host_private_key(text: str) -> str:
    if not HOST_PRIVATE_KEY.fullmatch(text):
        raise ValueError(HOST_PRIVATE_KEY_ALLOWED)
    return text

# ---- libvirt URIs -------------------------------------------------------------------------------
# driver[+transport]://[user@][host][:port]/path[?query] (https://libvirt.org/uri.html), for the drivers
# this project drives. The `ext` transport and the `command`/`netcat` parameters run programs: refused.
LIBVIRT_URI = re.compile(
    r"(?P<driver>qemu|test)(?:\+(?P<transport>unix|ssh|libssh|libssh2|tcp|tls))?://"
    r"(?:(?P<user>[a-z_][a-z0-9_.-]{0,31})@)?"
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])?"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?P<path>/[A-Za-z0-9._/-]{0,200})"
    r"(?:\?(?P<query>[A-Za-z0-9_]+=[A-Za-z0-9._/~-]*(?:&[A-Za-z0-9_]+=[A-Za-z0-9._/~-]*)*))?")
URI_QUERY_KEYS = frozenset({"socket", "keyfile", "known_hosts", "known_hosts_verify", "no_verify", "no_tty",
                            "sshauth", "pkipath", "mode", "proxy", "tls_priority"})
URI_ALLOWED = ("a libvirt URI driver[+transport]://[user@][host][:port]/path[?query] with driver qemu or test "
               "and transport unix, ssh, libssh, libssh2, tcp or tls, like qemu:///system or "
               "qemu+ssh://admin@host/system")
LAB_URI = "qemu:///system"


def libvirt_uri(uri: str) -> str:
    m = LIBVIRT_URI.fullmatch(uri)
    if not m:
        raise ValueError(URI_ALLOWED)
    if m["driver"] == "qemu" and m["path"] not in ("/system", "/session"):
        raise ValueError("a qemu URI's path is /system or /session; " + URI_ALLOWED)
    if (m["user"] or m["port"]) and not m["host"]:
        raise ValueError("a user or port needs a host; " + URI_ALLOWED)
    if m["port"] and not 1 <= int(m["port"]) <= 65535:
        raise ValueError("port must be 1..65535")
    if m["transport"] == "unix" and m["host"]:
        raise ValueError("the unix transport is local: no host")
    for kv in (m["query"] or "").split("&") if m["query"] else ():
        if kv.split("=", 1)[0] not in URI_QUERY_KEYS:
            raise ValueError(f"URI parameter {kv.split('=', 1)[0]!r} is not allowed; allowed: "
                             + ", ".join(sorted(URI_QUERY_KEYS)))
    return uri


LOOPBACK_HOSTS = re.compile(r"localhost|127(?:\.[0-9]{1,3}){3}|\[::1\]")


def uri_is_local(uri: str) -> bool:
    """The hypervisor is this machine: no host, or a loopback one (e.g. the lab's hypervisors, qemu+ssh to
    127.0.0.1), so what this machine can boot (KVM or TCG) is what it can boot."""
    m = LIBVIRT_URI.fullmatch(uri)
    return bool(m) and (not m["host"] or bool(LOOPBACK_HOSTS.fullmatch(m["host"])))


def plain_tcp_remote(uri: str) -> bool:
    """`+tcp` to another machine: libvirt's RPC with neither authentication nor encryption, so whoever
    reaches the port drives the hypervisor (and reads the seeds' secrets). Loopback stays this machine's."""
    m = LIBVIRT_URI.fullmatch(uri)
    return bool(m) and m["transport"] == "tcp" and not uri_is_local(uri)


def tcp_refused(opt_in: str) -> str:
    return ("plain TCP to another host: libvirt's RPC with no authentication or encryption (anyone who reaches "
            "the port drives the hypervisor): use qemu+ssh://USER@HOST/system (or qemu+tls://, with a client that speaks "
            f"TLS), or set {opt_in}: true to accept that")


# ---- paths and URLs -----------------------------------------------------------------------------
SHA256 = re.compile(r"[0-9a-f]{64}")
PATH = re.compile(r"(?:/|\./|\.\./)?[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*")
# A downloaded file comes over https with the sha256 it must have, in the URL's fragment (never sent to
# the server): the libvirt plugin checks the download against it before it makes a volume of it.
URL = re.compile(r"https://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?"
                 r"(?:/[A-Za-z0-9._~%+-]*)+#sha256=(?P<sha256>[0-9a-f]{64})")
IMAGE_ALLOWED = ("a file path (relative to the project or absolute: letters, digits, '_', '.', '+', '-', '/') "
                 "or an https URL with the file's sha256: https://HOST/PATH#sha256=<64 hex digits> "
                 "(plain http and a URL without its digest are refused)")
ABS_DIR = re.compile(r"(?:/[A-Za-z0-9_.+-]+)+")
SYSTEM_DIRS = frozenset({"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media",
                         "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
                         "/var", "/var/lib", "/var/lib/libvirt", "/var/log", "/var/run", "/var/tmp",
                         "/var/cache", "/var/spool", "/var/mail", "/usr/local"})
NO_POOL_UNDER = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
                 "/usr")


def pool_path(p: str) -> str:
    if not ABS_DIR.fullmatch(p) or any(part in (".", "..") for part in p.split("/")):
        raise ValueError("an absolute, normalised directory path on the hypervisor (letters, digits, "
                         "'_', '.', '+', '-', '/'), like /var/lib/libvirt/hacluster")
    if p.rstrip("/") in SYSTEM_DIRS or any(p == d or p.startswith(d + "/") for d in NO_POOL_UNDER):
        raise ValueError("a system directory: use a directory of its own, like /var/lib/libvirt/hacluster")
    return p


def ipv4(text: str) -> ipaddress.IPv4Address:
    if not IPV4.fullmatch(text):
        raise ValueError("must be an IPv4 address like 192.168.81.100")
    return ipaddress.IPv4Address(text)
