#!/usr/bin/env bash
# The committed tables and the plot, from the records in results/reference/runs (results/regenerate.sh runs it
# last; it trains nothing, so it can be rerun alone after a change to the tables' code):
#
#   bash results/tables.sh [RECORDS_DIR [OUT_DIR]]      # defaults: results/reference, results
#
# Each table holds one question, and Holm's family is that table's comparisons (or each column's, where the
# columns ask separate questions): the README's and the docs' sentences claim exactly these families, and
# tests/test_docs_figures.py recomputes them the same way. `setting=none` keeps the runs at their method's
# defaults; the variants (weights, logit standardization, DOT) and the nested teacher × subset design have tables
# of their own, so adding them never changes a mark of the main tables.
set -euo pipefail
cd "$(dirname "$0")/.."
R="${1:-results/reference}"
OUT="${2:-results}"
board() { kdbench leaderboard --results-dir "$R" "$@"; }
# At the method's defaults, on the recipe's own data draw and trained without DOT.
PLAIN="setting=none,recipe.dot_delta=0|none"
DRAW0="data.subset_seed=none"

# digits (digits-v1): every method into ResNet-18, CNN2GNN's ablations into the GNN, per teacher. Its columns ask
# separate questions, so Holm corrects each column apart (--family column). CNN2GNN's ablations are variants of its
# defaults, so this table leaves out only the logit-standardization rows (in embedded-hard-variants.md's family).
DIGITS=(--where "recipe=digits-v1,setting!=logit_std=True,recipe.dot_delta=0|none,$DRAW0")
board --table methods "${DIGITS[@]}" --family column --format markdown --out "$OUT/leaderboard.md"
board --table methods "${DIGITS[@]}" --family column --format csv --out "$OUT/leaderboard.csv"
board --table ladder --format markdown --out "$OUT/ladder.md"
board --table ladder --format csv --out "$OUT/ladder.csv"

# embedded-hard, the CNN student from the ResNet-18 teacher (zoo seed 0): every method at its defaults, beside the
# information-matched control (the teacher trained on the student's 10 %). Both columns share one ce, so Holm's
# family is the table's comparisons, as the docs' sentences pool them.
HARD="recipe=embedded-hard-v2,student=cifar_resnet8"
CNN=(--where "$HARD,teacher=resnet18|none,teacher_seed=0|none,$PLAIN,$DRAW0")
board --table methods "${CNN[@]}" --ci --format markdown --out "$OUT/embedded-hard.md"
board --table methods "${CNN[@]}" --format csv --out "$OUT/embedded-hard.csv"

# The other teachers of the same student: the heterogeneous column (a tiny DeiT, issue #35.5) and the CIFAR pair
# (cifar_resnet56, for the methods that need equal widths). Each column is its own question (--family column).
PAIRS=(--where "$HARD,teacher=deit_tiny_patch16_224|cifar_resnet56|none,$PLAIN,$DRAW0")
board --table methods "${PAIRS[@]}" --family column --ci --format markdown --out "$OUT/embedded-hard-pairs.md"
board --table methods "${PAIRS[@]}" --family column --format csv --out "$OUT/embedded-hard-pairs.csv"

# Variants on embedded-hard's ResNet-18 column, one family each: the weight sweeps of the methods below the student
# alone (each weight against ce), logit standardization (each method with and without it), DOT (kd, dkd).
TEACHER0="$HARD,teacher=resnet18|none,teacher_seed=0|none,teacher_data.train_fraction=1|none,data.subset_seed=none"
{
  echo "# embedded-hard: the variants (5 seeds each)"
  echo
  echo "Made by \`results/tables.sh\` from the records in \`results/reference/runs/\`" \
    "(\`slurm/sweeps/embedded-hard-{weights,cifar-pair,logit-std,dot}.yaml\`); what they mean:" \
    "[docs/benchmark.md](../docs/benchmark.md#the-variants-weights-logit-standardization-dot)."
  for method in at fitnet crd ab nst ofd; do
    echo
    echo "## $method: its weight (ResNet-18 teacher)"
    echo
    board --table ablation --method "$method" --where "$TEACHER0,recipe.dot_delta=0|none" --ci --format markdown
  done
  for method in ft fsp; do  # they refuse the ResNet-18 pair: the CIFAR pair's sweep
    echo
    echo "## $method: its weight (cifar_resnet56 teacher)"
    echo
    board --table ablation --method "$method" --where "$HARD,teacher=cifar_resnet56|none,recipe.dot_delta=0|none,$DRAW0" --ci \
      --format markdown
  done
  echo
  echo "## Logit standardization"
  echo
  board --table methods --where "$TEACHER0,recipe.dot_delta=0|none,method=ce|kd|dkd|crd+kd|hkd+kd|dist|ctkd" --ci \
    --format markdown
  echo
  echo "## DOT (recipe.dot_delta): kd and dkd with and without it"
  echo
  # DOT's column has no ce of its own (DOT splits the momentum of a distillation term from the task's; the student
  # alone has none), so its cells carry no marks: docs/benchmark.md compares each with its plain run, seed by seed.
  board --table methods --where "$TEACHER0,setting=none,method=ce|kd|dkd" --family column --ci --format markdown
} > "$OUT/embedded-hard-variants.md"

# The nested design (issue #38.4): 3 zoo teachers × 3 subset draws × 3 seeds; which variance dominates.
NESTED=(--where "$HARD,teacher=resnet18|none,teacher_data.train_fraction=1|none,$PLAIN"
        --where "method=ce|kd|crd+kd|hkd+kd|dkd")
board --table variance "${NESTED[@]}" --format markdown --out "$OUT/embedded-hard-variance.md"
board --table variance "${NESTED[@]}" --format csv --out "$OUT/embedded-hard-variance.csv"

# CNN2GNN's graph study on embedded-hard (docs/cnn2gnn.md).
{
  echo "# CNN2GNN: does the graph help? (embedded-hard, 5 seeds)"
  echo
  echo "Made by \`results/tables.sh\` from the records in \`results/reference/runs/\`" \
    "(\`slurm/sweeps/cnn2gnn-graph-ablation*.yaml\`); what it means:" \
    "[docs/cnn2gnn.md](../docs/cnn2gnn.md#does-the-graph-help-embedded-hard-5-seeds)."
  echo
  board --table pivot --where recipe=embedded-hard-v2 --where method=cnn2gnn \
    --rows cnn2gnn.graph_features,cnn2gnn.graph --cols cnn2gnn.k --format markdown
  echo
  board --table ablation --method cnn2gnn --where recipe=embedded-hard-v2 --format markdown
} > "$OUT/ablation.md"
[ -n "${NO_PLOT:-}" ] || kdbench plot --results-dir "$R" --out-dir "$OUT/plots" --formats png
