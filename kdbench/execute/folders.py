"""The folders a run writes, checked before its run folder is made.

A run writes its results folder (`runs/<id>/`) and, when its teacher is missing from the zoo, the zoo. Either one
that cannot be created (a file in its way, a read-only mount, a full disk) is one line naming it, before the run
takes its lock or writes its record: a refused run leaves no run folder behind (issue #34). A zoo that already
holds the teacher is only read, so a colleague's read-only zoo serves its teachers.

The teacher-output cache is not checked: it only saves time, so a cache folder that cannot be written is said
once and the run goes on without storing to it, with the same numbers (kdbench.teachers.output_cache; it may
still be read, e.g. a colleague's read-only cache).
"""

from __future__ import annotations

from kdbench.core.errors import UserError
from kdbench.execute.build import teacher_key
from kdbench.spec.config import RunConfig
from kdbench.spec.paths import Paths, check_folder
from kdbench.store.records import RunStore
from kdbench.teachers.zoo import CARD, WEIGHTS, TeacherKey, TeacherZoo
from kdbench.teachers.zoo_files import BadZooFile


def check_run_folders(config: RunConfig, paths: Paths) -> None:
    """Every folder the run `config` will create or write, checked (UserError naming the first that cannot be)."""
    store = RunStore(paths.results_dir)
    check_folder(store.root / "runs", f"results dir {store.root}", "--results-dir")
    if uses_zoo(config):
        check_zoo_can_store(TeacherZoo(paths.zoo_dir), teacher_key(config))


def uses_zoo(config: RunConfig) -> bool:
    """Whether the run's teacher comes from the zoo (not a user's file, not another run's student, or none)."""
    return config.teacher is not None and not config.teacher_ckpt_sha256 and not config.teacher_run


def check_zoo_can_store(zoo: TeacherZoo, key: TeacherKey) -> None:
    """The zoo must be writable where it will train (store) the teacher of `key`. A zoo that holds the teacher
    already need not be (a colleague's read-only zoo serves it), unless the teacher fails its checksum: then it
    would be set aside and retrained there, so that is a UserError now, saying what is wrong and where."""
    entry = zoo.entry_dir(key)
    held = (entry / CARD).is_file() and (entry / WEIGHTS).is_file()
    try:
        check_folder(zoo.root, f"zoo dir {zoo.root}", "--zoo-dir")
    except UserError as cannot_write:
        if not held:
            raise
        # Before, a bad teacher found after the run's record was written hit the read-only zoo when set aside: a
        # half-made run folder and a misleading "free space" line. Checked here only, as it reads the weights.
        try:
            zoo.verified_card(key)
        except BadZooFile as bad:
            raise UserError(f"teacher {key.arch} at {entry}: {bad}, and it cannot be set aside and retrained there: "
                            f"{cannot_write}") from None


def check_sweep_folders(paths: Paths, *, trains_teachers: bool) -> None:
    """A sweep's folders, checked before it submits a job: the results folder (its sweep file, then every run's
    folder) and, when it `trains_teachers`, the zoo. Each job checks its own again (kdbench.execute.runner)."""
    store = RunStore(paths.results_dir)
    check_folder(store.root / "runs", f"results dir {store.root}", "--results-dir")
    if trains_teachers:
        zoo = TeacherZoo(paths.zoo_dir)
        check_folder(zoo.root, f"zoo dir {zoo.root}", "--zoo-dir")
