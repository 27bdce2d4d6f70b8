"""The README's "Writing a method" example is runnable and correct: installed as a plugin module it trains one
tiny epoch, through the teacher-output cache, and gives the built-in `kd`'s numbers at the same weights (the same
CE, with the recipe's label smoothing, and the same KD term)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

SCRIPT = """
import json, sys
import kdbench
import kdbench_readme_method  # registers "mymethod"

common = dict(teacher="test_resnet", student="test_resnet", epochs=1, teacher_epochs=1, device="cpu",
              infer_batch_size=8, results_dir=sys.argv[1], zoo_dir=sys.argv[2])
sets = ["data.image_size=8", "recipe.label_smoothing=0.1"]
mine = kdbench.run("mymethod", sets=sets, **common)
builtin = kdbench.run("kd", sets=[*sets, "kd.w_ce=1", "kd.w_kd=1"], **common)
print(json.dumps({"mine": mine, "builtin": builtin}))
"""


def readme_example() -> str:
    section = README.read_text().split("### Writing a method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_method_trains_through_the_cache_and_matches_builtin_kd(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "kdbench_readme_method.py").write_text(readme_example())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "results"), str(tmp_path / "zoo")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    mine, builtin = out["mine"], out["builtin"]
    assert mine["status"] == "completed" and mine["method"] == "mymethod"
    # The teacher's logits went through the teacher-output cache (`teacher_logits(batch)`, not of the images).
    assert mine["teacher_cache"]["hits"] + mine["teacher_cache"]["misses"] > 0
    # The same numbers as kd at w_ce = w_kd = 1, T = 4: the harness's CE with label smoothing, the same KD loss.
    assert mine["metrics"]["top1_last"] == builtin["metrics"]["top1_last"]
    epochs = [json.loads((tmp_path / "results" / "runs" / r["run_id"] / "metrics.jsonl").read_text().splitlines()[0])
              for r in (mine, builtin)]
    assert epochs[0]["losses"] == epochs[1]["losses"]
