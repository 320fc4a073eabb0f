"""``ctr demo``: the closed loop on one machine — drift detected, one retrain, recovery.

1. Generate days with drift switched on at ``drift_day`` (``ctr synth``).
2. Run the pipeline in ``full`` mode locally → version 1.
3. Start Triton and the score API (SQLite event log).
4. Play the ad server and its users on a simulated clock: every tick, score requests with
   candidate sets from the generator of the current simulated day; the top ads are shown;
   clicks are drawn from the planted true probabilities and posted after a random delay.
5. Every ``monitor_every`` of simulated time run the monitor (the CronJob's code) with the
   local trigger: when the windowed AUC falls below the threshold it starts the incremental
   pipeline once; the gate publishes version 2; Triton swaps; AUC recovers.

Writes ``report_dir/``: ``auc.png``, ``index.html`` (plot, decision records, drift report)
and ``summary.json``. Triton, the API and any pipeline run it started are stopped on exit,
Ctrl-C or failure.
"""

from ctr.demo.closed_loop import run_demo
from ctr.demo.scenario import DemoConfig, DemoError

__all__ = ["DemoConfig", "DemoError", "run_demo"]
