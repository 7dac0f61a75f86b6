"""What the tests (and the benchmarks) use around the receiver, one job per module.

* ``procs``: process control: free ports, start-up deadlines, clean stops, workers' pids;
* ``peers``: real peers started for a test (redis-server, VictoriaMetrics, rotel) and PromQL;
* ``metrics``: reading counters back from ``/metrics`` or VictoriaMetrics, and comparing them;
* ``lanes``: replaying POSTs from many connections at once, as browsers send them;
* ``traffic``: deterministic panel traffic; ``oracle``: the counters it should give, computed
  without the package;
* ``otlp_sink``: a small OTLP/HTTP receiver that keeps what it was sent.

This file imports nothing, so that importing one module loads only what that module needs.
"""
