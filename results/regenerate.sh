#!/usr/bin/env bash
# Regenerates the reference leaderboard of the embedded benchmark (digits) committed in results/.
#
#   bash results/regenerate.sh            # ~65 min on 2 CPU cores from nothing; completed runs are reused, so it can be resumed
#
# Results version 5, measured 2026-12-07 on a 2-core AMD EPYC (docs/benchmark.md, "What results version 5 ran"):
# 704 runs and 7 zoo teachers; the digits sweep ~20 min (kdsvd most of it), embedded-hard's ~600 runs ~35 min, the
# ladders ~9 min. Writes results/reference (records, canaries) and, through results/tables.sh, the tables and plot.
#
# 1. the embedded sweep (slurm/sweeps/embedded.yaml: every method from a resnet18 teacher, seeds 0-2) and
#    cnn2gnn from resnet152, on this machine (local executor; pass EXECUTOR=slurm to use a cluster);
# 2. the CNN2GNN ablations (anchor graph, k = 0: the same input without a graph) and the GNN alone; the
#    embedded-hard sweep, its information-matched control (the teacher trained on the student's 10 %:
#    embedded-hard-control.yaml) and CNN2GNN's graph ablation on it (slurm/sweeps/embedded-hard*.yaml,
#    cnn2gnn-graph-ablation*.yaml; 5 seeds, ~6 min more on 2 cores at results version 4);
# 3. the depth ladder (ResNet18…152 trained alone beside the distilled GNN), on digits and on embedded-hard;
# 4. tables (markdown, CSV) and the accuracy-vs-inference-time plot;
# 5. the RESULTS_VERSION canaries (results/canary.sh, checked by tests/test_results_version.py).
#
# It refuses a dirty tree: a record names the commit it ran from (environment.git.sha), and uncommitted changes
# would make that name a lie. ALLOW_DIRTY=1 runs anyway; every record then carries environment.git.dirty and
# environment.git.diff_sha256 (sha256 of `git diff HEAD`), which names the exact changes it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
# What this script writes (records, tables, plots) does not count as a change to the code that made them (nor in a
# record's environment.git: kdbench.core.environment.OUTPUT_PATHSPECS is the same list).
OUTPUTS=(':(exclude)results/reference' ':(exclude)results/plots' ':(exclude)results/*.md' ':(exclude)results/*.csv')
if [ -n "$(git status --porcelain --untracked-files=no -- . "${OUTPUTS[@]}")" ]; then
  if [ "${ALLOW_DIRTY:-0}" != 1 ]; then
    echo "results/regenerate.sh: the tree has uncommitted changes (git status); commit them first, or run with" \
      "ALLOW_DIRTY=1 to record the diff's sha256 in every record (environment.git.diff_sha256)" >&2
    exit 2
  fi
  echo "results/regenerate.sh: dirty tree, diff sha256 $(git diff HEAD -- . "${OUTPUTS[@]}" | sha256sum | cut -d' ' -f1)" >&2
fi
# Records go to results/reference (not ./results, the default results dir, so a user's own first run trains
# instead of finding the reference record); tables and the plot go to results/.
R=results/reference
OUT=results
EXECUTOR="${EXECUTOR:-local}"
SEEDS="${SEEDS:-0,1,2}"
# One torch thread per run and one run per core: on a small machine, runs that each take every core fight over
# them (torch's threads spin), and the whole sweep takes several times longer. Records state their threads.
CPUS="${CPUS:-1}"
# The same for every process this script starts, the in-process ones too (`kdbench ladder` trains in its own
# process with torch's default, every core, where the sweeps' --cpus-per-task does not reach: the results-version-4
# ladder records ran with 2 threads).
export OMP_NUM_THREADS="$CPUS" MKL_NUM_THREADS="$CPUS"

kdbench sweep --config slurm/sweeps/embedded.yaml --executor "$EXECUTOR" --seeds "$SEEDS" --results-dir "$R" --wait \
  --cpus-per-task "$CPUS"
# CNN2GNN's own comparison: the ResNet-152 teacher into the two-layer GNN (the README's first command).
kdbench sweep --methods cnn2gnn --teachers resnet152 --datasets digits --seeds "$SEEDS" --executor "$EXECUTOR" \
  --results-dir "$R" --wait --cpus-per-task "$CPUS"
# The GNN alone (its own default recipe), the baseline every CNN2GNN cell is tested against.
kdbench sweep --methods ce --students gnn2 --datasets digits --seeds "$SEEDS" --executor "$EXECUTOR" \
  --results-dir "$R" --wait --cpus-per-task "$CPUS"
for variant in cnn2gnn.graph=anchor cnn2gnn.k=0; do
  kdbench sweep --methods cnn2gnn --teachers resnet152 --datasets digits --seeds "$SEEDS" --set "$variant" \
    --executor "$EXECUTOR" --results-dir "$R" --wait --cpus-per-task "$CPUS"
done
# embedded-hard (docs/benchmark.md): every method on the limited-data setting, the control whose teacher saw only the
# student's 10 % (kd, crd+kd, hkd+kd, dkd: its own column of results/embedded-hard.md), and CNN2GNN's graph ablation
# on it, 5 seeds each as the sweep files say (SEEDS does not apply to them).
for sweep in embedded-hard embedded-hard-control cnn2gnn-graph-ablation cnn2gnn-graph-ablation-teacher; do
  kdbench sweep --config "slurm/sweeps/$sweep.yaml" --executor "$EXECUTOR" --results-dir "$R" --wait \
    --cpus-per-task "$CPUS"
done
# Results version 5 (issues #35.5, #36, #38.4-5; docs/benchmark.md, "The next regeneration"):
# - the CIFAR pair (cifar_resnet56 -> cifar_resnet8: equal widths, spatial last stages) for ft, fsp and kdsvd, which
#   refuse the ResNet-18 pair, beside kd and ce on the same pair;
# - the heterogeneous column: a tiny DeiT teacher (trained once by the zoo) -> cifar_resnet8, every method it can give;
# - DOT (recipe.dot_delta) and logit standardization (logit_std) as variants of the methods they apply to;
# - the weight sweeps of the methods below the student alone (at, fitnet, crd), in committed records.
for sweep in embedded-hard-cifar-pair embedded-hard-vit embedded-hard-dot embedded-hard-logit-std \
    embedded-hard-weights; do
  kdbench sweep --config "slurm/sweeps/$sweep.yaml" --executor "$EXECUTOR" --results-dir "$R" --wait \
    --cpus-per-task "$CPUS"
done
# The same variants on digits (the digits table's own rows; its methods are in embedded.yaml).
kdbench sweep --methods kd --teachers resnet18 --datasets digits --seeds "$SEEDS" --set recipe.dot_delta=0.075 \
  --executor "$EXECUTOR" --results-dir "$R" --wait --cpus-per-task "$CPUS"
kdbench sweep --methods dist,ctkd --teachers resnet18 --datasets digits --seeds "$SEEDS" --set dist.logit_std=true \
  --set ctkd.logit_std=true --executor "$EXECUTOR" --results-dir "$R" --wait --cpus-per-task "$CPUS"
# embedded-hard nested (issue #38.4): 3 zoo teachers (seeds 0-2) x 3 subset draws x 3 student seeds; the two outer
# factors are given here (the file's header says why), `kdbench leaderboard --table variance` reads them.
for teacher_seed in 0 1 2; do
  kdbench sweep --config slurm/sweeps/embedded-hard-nested.yaml --teacher-seed "$teacher_seed" \
    --grid data.subset_seed=0,1,2 --executor "$EXECUTOR" --results-dir "$R" --wait --cpus-per-task "$CPUS"
done
# The deeper CNNs of the ladder (ResNet-34…152 alone) take one seed: they only place the GNN on the depth axis.
kdbench ladder --teacher resnet152 --dataset digits --seeds "${LADDER_SEEDS:-0}" --results-dir "$R" \
  --format markdown > /dev/null
# The same ladder on embedded-hard (10 % of the training labels, 40 epochs, under that setting's ResNet-18
# teacher): where the GNN and the CNNs alone stand when labels are scarce (~5 min more on 2 cores).
kdbench ladder --teacher resnet18 --dataset digits --seeds "${LADDER_SEEDS:-0}" --epochs 40 \
  --set data.train_fraction=0.1 --set recipe.batch_size=47 --set recipe.name=embedded-hard-v2 --results-dir "$R" --format markdown > /dev/null

# Tables (markdown, CSV) and the plot, from the records alone: results/tables.sh (it can be rerun by itself).
bash results/tables.sh "$R" "$OUT"
bash results/canary.sh
