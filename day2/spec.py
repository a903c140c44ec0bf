"""The day-2 spec (env HACLUSTER_DAY2_SPEC): a model, serialised by components/tiers.py and parsed
here, with the same grammars as the stack settings (no second hand-written validator)."""

from __future__ import annotations

from pydantic import Field

from model import grammar as g
from model.config import Hostname, Int, IPv4, Model, Num, Text


class Day2Spec(Model):
    node: Hostname = Field(description="the node's name")
    ip: IPv4 = Field(description="where to reach it over SSH")
    ssh_user: Text(g.USERNAME, "a Linux user name") = Field(description="the admin user")
    netns: Text(g.NETNS, "a network namespace name") | None = Field(None, description="reach the node from inside it")
    timeout: Int(1, 7200) = Field(600, description="seconds the node's boot may go without progress")
    console: Text(g.PATH, "a file path") | None = Field(
        None, description="the node's serial console log on the deploy host (its boot progress), if readable")
    limit: Num(1, 86400) | None = Field(None, description="an overall bound in seconds, if any")
