"""Canary analysis: a Flagger-shaped policy, a pure decision, and the thin I/O around it.

Layout (one concern per module):

- :mod:`router.canary.analysis` — ``CanaryAnalysis`` (Flagger's ``analysis`` block, field for
  field) and its pure ``evaluate(snapshot, state) -> Decision``;
- :mod:`router.canary.state` — the persisted state (JSON file, atomic write) and its events;
- :mod:`router.canary.promtext` — Prometheus text -> counters, deltas, histogram quantiles (pure);
- :mod:`router.canary.sources` — metric sources (the router's ``/metrics``, Prometheus HTTP API);
- :mod:`router.canary.actuators` — weight writers (router admin API, the router-policy ConfigMap);
- :mod:`router.canary.controller` — the loop: measure, decide, actuate, persist, export.
"""
