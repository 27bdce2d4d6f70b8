"""execute: one run from options to record.

The public `run()` (`api`: options in, record out; `nproc` processes launched there). Resolve the config
(`resolve`), build its pieces (`build`), train, evaluate and store them (`runner`, under the run's lock: `locks`);
dry runs,
re-evaluation, the depth ladder and the public `create_teacher`.
"""
