"""`make bench`: time to a verified cluster, failover gaps per failure kind and profile, balancer overhead,
host memory per VM. Writes bench/results/latest.json (+ a PNG timeline of one drill) and prints a Markdown
table. Nothing here asserts a time: the bench fails only when the cluster is broken (a verifier check fails).

Pure parts (no I/O): bench.stats (summaries, wrk output, targets), bench.report (the Markdown), bench.config
(the bench stacks' config). Everything that touches the lab: bench.lab, bench.stacks, bench.drill.
"""
