"""The fault-injection suite: a real workload under relay kills, broker bounces, DB restarts, a Kafka outage and
network faults, checked by a verifier that shares no code with the relay (see chaos/checker.py)."""
