"""``ctr demo``: the closed loop on one machine — drift detected, retrains, recovery measured.

1. Generate days with drift switched on at ``drift_day`` (``ctr synth``).
2. Run the pipeline in ``full`` mode locally → version 1.
3. Start Triton and the score API (SQLite event log).
4. Play the ad server and its users on a simulated clock: every tick, score requests with
   candidate sets from the generator of the current simulated day; the top ads are shown;
   clicks are drawn from the planted true probabilities and posted after a random delay.
5. Every ``monitor_every`` of simulated time run the monitor (the CronJob's code, with the
   shipped rules: learned baseline, calibration, 6 h cooldown, escalation) and the local
   trigger: a breach starts the incremental pipeline (a full one when an incremental retrain
   did not repair it); the gate publishes; Triton swaps. A triggered run may take at most
   ``pipeline_latency`` of simulated time: past it the clock waits for the pipeline.
   With ``update_every`` set (``ctr demo --update-every 5h``), a scheduled incremental update
   (what ``ctr pipeline schedule`` runs on Kubeflow) also starts at that cadence from the start
   of traffic, one run at a time: skipped while another run is in flight, and finished before
   the next monitor run.
6. Yardsticks (``ctr.demo.yardsticks``): every shown impression is scored offline by version 1
   and by a counterfactual full retrain at the first trigger after the onset; with the true
   probabilities (the oracle) they give the recovery share of the gap the retrains closed.

Writes ``report_dir/``: ``auc.png`` (windowed AUC, oracle, drifted, counterfactual),
``index.html`` (plot, decision records, drift report) and ``summary.json``.
Triton, the API and any pipeline run it started are stopped on exit,
Ctrl-C or failure.
"""

from ctr.demo.closed_loop import run_demo
from ctr.demo.scenario import DemoConfig, DemoError

__all__ = ["DemoConfig", "DemoError", "run_demo"]
