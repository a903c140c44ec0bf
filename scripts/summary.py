"""Print what `make up` made: the VIP, the nodes and the verification verdict with its gaps."""

import json
import sys

out = json.loads(sys.argv[1])
report = out.get("verification") or {}
print(f"\nVIP: {out['vipUrl']}  (domain type {out.get('domainType')}, lab namespace {out.get('labNetns')})")
for name, node in sorted(out["nodes"].items()):
    role = f"{node['role']} {node.get('state') or ''} {node.get('priority') or ''}".strip()
    print(f"  {name:8} {node['ip']:16} {role}" + (f"  on {node['host']}" if node.get("host") else ""))
if report:
    print(f"verification: {'PASSED' if report.get('passed') else 'FAILED'}")
    for c in report.get("checks", []):
        print(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
    for step, gap in sorted((report.get("gaps") or {}).items()):
        if "gap_s" in gap:  # a drill step: seconds without an answer from the VIP, failed probes
            print(f"  gap {step:18} {gap['gap_s']} s, {gap.get('failed_probes')} failed probes")
        else:  # a drill under load: requests, failures, and where the VIP can move, seconds without a holder
            hold = f", {gap['no_holder_s']} s with no holder" if "no_holder_s" in gap else ""
            print(f"  load {step:17} {gap.get('failed_requests')} of {gap.get('requests')} requests failed, "
                  f"max latency {gap.get('max_latency_s')} s{hold}")
if out.get("labNetns"):
    print(f"\nThe VIP exists only inside network namespace {out['labNetns']}: `make forward`, then open "
          "http://127.0.0.1:8080/")
