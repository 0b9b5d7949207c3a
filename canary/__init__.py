"""Canary analysis: a Flagger-shaped policy, a pure decision, and the thin I/O around it.

Layout (one concern per module):

- :mod:`canary.analysis` — ``CanaryAnalysis`` (Flagger's ``analysis`` block, field for
  field) and its pure ``evaluate(snapshot, state) -> Decision``;
- :mod:`canary.state` — the persisted state (JSON file, atomic write) and its events;
- :mod:`canary.promtext` — Prometheus text -> counters, deltas, histogram quantiles (pure);
- :mod:`canary.sources` — metric sources (the router's ``/metrics``, Prometheus HTTP API);
- :mod:`canary.actuators` — weight writers (router admin API, the router-policy ConfigMap);
- :mod:`canary.controller` — the loop: measure, decide, actuate, persist, export.
"""
