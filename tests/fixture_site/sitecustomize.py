"""Test-only start-up hook for processes that read the tiny CIFAR-100 fixture (kdbench/data/fixtures.py): the SLURM
jobs of tests/test_sweep_cifar_slurm.py and every run benchmarks/gpu_check.py starts (`kdbench run`, the elastic
launcher's ranks of `--nproc`, the bare loop).

Such a process is a fresh Python process, so the in-process `patch_md5` of the loader tests cannot reach it.
Python imports `sitecustomize` at start-up from the first folder of PYTHONPATH that has one; the smoke test and
the GPU check put this folder there (only in the environment of the processes they start) and name a JSON file
of the fixture's md5s in KDBENCH_TEST_CIFAR_MD5. Like `patch_md5`, this points our CIFAR100Files subclass's
expected checksums at the fixture's files: torchvision's reader and its md5 check still run on every file, and
nothing outside tests/ can set it.
"""

import json
import os

_MD5_FILE = os.environ.get("KDBENCH_TEST_CIFAR_MD5")
if _MD5_FILE:
    from kdbench.data.cifar import CIFAR100Files

    with open(_MD5_FILE) as f:
        _md5 = json.load(f)
    CIFAR100Files.train_list = [[name, _md5[name]] for name, _ in CIFAR100Files.train_list]
    CIFAR100Files.test_list = [[name, _md5[name]] for name, _ in CIFAR100Files.test_list]
    CIFAR100Files.meta = {**CIFAR100Files.meta, "md5": _md5[CIFAR100Files.meta["filename"]]}
