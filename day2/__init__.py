"""Day-2 config changes without replacing VMs: push rendered files over SSH, validate on the node,
swap and reload only when the node's own tools accept them (the old config keeps serving otherwise)."""
