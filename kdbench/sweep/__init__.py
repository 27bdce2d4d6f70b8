"""Sweeps: a grid of runs submitted through submitit (SLURM job arrays, local processes or in-process).

- `grid`: the grid, its size and its expansion into run configs;
- `sweep_file`: a sweep file's and the command line's options, checked, as a grid, resources and paths;
- `plan`: what to submit (teachers missing from the zoo, runs not done);
- `jobs`: the submitted callables (checkpointable run and teacher jobs);
- `executors`: slurm, local or debug, and the submitit executor a sweep's resources make;
- `node_fit`: SLURM CPUs per task that fit a node;
- `submit`: the teacher jobs and the job array with its afterok dependency;
- `saved_sweep`: the sweep file a submission writes (and `status`, `--wait`, `--resume` read);
- `pending`: scheduler pending reasons that clear by themselves and those that never do;
- `status`: each run's state from its record and its job.
"""

from __future__ import annotations

from kdbench.spec.paths import Paths
from kdbench.sweep.executors import choose_executor
from kdbench.sweep.grid import Grid, JobSettings, Resources, SweepRun, expand
from kdbench.sweep.plan import Plan, make_plan, runs_of_sweep
from kdbench.sweep.saved_sweep import load_saved_sweep, new_sweep
from kdbench.sweep.status import SweepState, sweep_state, wait_for_sweep
from kdbench.sweep.submit import submit_plan
from kdbench.sweep.sweep_file import read_sweep_file

__all__ = [
    "Grid", "JobSettings", "Paths", "Plan", "Resources", "SweepRun", "SweepState", "choose_executor", "expand",
    "load_saved_sweep", "make_plan", "new_sweep", "read_sweep_file", "runs_of_sweep", "submit_plan", "sweep_state",
    "wait_for_sweep",
]
