"""Latency: the one timing module (percentiles, interleaved runs, a report's timing plan) and
distill bench."""
