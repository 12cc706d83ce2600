"""Running the whole system end to end: the one package that starts every part.

- :mod:`endtoend.demo` and ``python -m endtoend demo``: ``make demo`` and ``make simulate``;
- :mod:`endtoend.loop`: the closed loop (the real job as a process, serving, the simulated
  visitors) and :mod:`endtoend.simulation`, the reference policies on the same visits
  (random, the oracle's best list, an instant in-process LinUCB);
- :mod:`endtoend.report`: the table, results/simulate.json and the learning-curve plot;
- :mod:`endtoend.harness`: the job driven from outside (seeded traffic, the exact model it
  must learn) for tests/ and bench/;
- :mod:`endtoend.processes`: child processes in a group of their own.

It may import every other package; none imports it (tests/ and bench/ aside).
"""
