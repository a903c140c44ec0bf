"""Post-deploy verifier: `python -m verifier` probes the VIP, checks who holds it, runs the failover drill
and prints one JSON report on stdout (progress on stderr). See verifier/spec.py for its input."""
