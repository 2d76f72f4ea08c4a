"""Init x learning-rate studies on Optuna: every grid point a trial, claimed exactly once by any number
of workers sharing one storage (SQLite file or PostgreSQL), resumable after a crash, and reported
with each init at its own validation-selected learning rate.

    store.py    the Optuna study: grid signature, claiming under a lock, stale trials re-queued
    liveness.py who holds a trial: host identity, pid checks, the heartbeat thread
    experiment.py the experiment contract and registry: what a sweep and its report need from an experiment
    runners.py  the built-in experiments (toy, mf, finetune): what a trial runs, batched where it can be
    worker.py   ``lorainit sweep``: the claim / run / tell loop
    report.py   ``lorainit report``: tables, CSV/JSON exports; figures in report_plots.py
"""
