"""Archive-scale runs on Dask: the manifest (manifest.py), the task each worker runs (worker.py), its measurements
(stats.py), the orchestration (run.py) and the per-tape report (report.py)."""
