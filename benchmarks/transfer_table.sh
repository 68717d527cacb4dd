#!/usr/bin/env bash
# Notebook 05's benchmark table (make bench-table): k = 1, 5, 20, all x 5 seeds, every method's learning rate chosen
# on the validation accuracy of seeds 0-2 from one grid, 3e-4 ... 3e-2 (C 1e-3 ... 1000 for the pixel baseline),
# widened further where a choice sat at an edge. These are the commands that made
# src/transferlab/results/transfer_gain.*, in order; every run seeds itself, so rerunning them gives the same numbers
# on the same machine and thread count. One process of one thread at a time.
#
#   1. the first edition's table: seeds 0-2 on the grid 1e-3, 3e-3, 1e-2 (C 0.01, 0.1, 1), one part per k;
#   2. the grid widened, seeds 0-2: at k = 5 every method at 3e-4 and 3e-2; elsewhere the fixed features and the
#      pixel baseline (cheap) at both, scratch and fine-tuning at the new point beyond the edge they had chosen;
#   3. seeds 3 and 4 at the rates chosen on seeds 0-2 (--chosen-from), and scratch with twice the steps at its
#      chosen rate (the convergence check, k = 5 and all), for every seed that lacks it;
#   4. one merge (the choice on seeds 0-2: --select-seeds), then the parts are deleted (the merged JSON keeps every
#      run and every part's provenance).
set -euo pipefail
PY=${1:-python}
T="$PY benchmarks/transfer_gain.py --threads 1"
R=src/transferlab/results
S="--seed-list 0 1 2 --convergence-ks"
for k in 5 all 20 1; do  # 1.
    $T --seeds 3 --ks $k --lrs 1e-3 3e-3 1e-2 --logreg-cs 0.01 0.1 1 --name part_k$k
done
$T --ks 5 $S --lrs 3e-4 3e-2 --logreg-cs 1e-3 10 --name part_k5_wide  # 2.
$T --merge $R/part_k5.json $R/part_k5_wide.json --name part_select_k5
$T --ks 5 --seed-list 3 4 --convergence-ks 5 --chosen-from $R/part_select_k5.json --name part_k5_seeds34  # 3.
# the pixel baseline chose the top C (10) at k = 5: C 100 and 1000 too, every k
$T --ks 5 20 all 1 $S --methods logreg --logreg-cs 100 1000 --name part_logreg_wide  # 2.
$T --ks 20 all 1 $S --methods features logreg --lrs 3e-4 3e-2 --logreg-cs 1e-3 10 --name part_wide_cheap
$T --ks 20 $S --methods scratch --lrs 3e-2 --name part_k20_wide_scratch
$T --ks 20 $S --methods finetune --lrs 3e-4 --name part_k20_wide_finetune
$T --merge $R/part_k1.json $R/part_k20.json $R/part_kall.json $R/part_wide_cheap.json $R/part_k20_wide_scratch.json \
    $R/part_k20_wide_finetune.json $R/part_logreg_wide.json --name part_select_rest
$T --ks 20 all 1 --seed-list 3 4 --convergence-ks --chosen-from $R/part_select_rest.json --name part_rest_seeds34  # 3.
$T --ks all $S --methods scratch finetune --lrs 3e-2 --name part_kall_wide  # 2., the remaining edges
$T --ks 20 $S --methods scratch --lrs 1e-1 --name part_k20_wide_scratch2  # scratch chose 3e-2 at k = 20
$T --ks 1 $S --methods scratch --lrs 3e-2 --name part_k1_wide
ALL="$R/part_k1.json $R/part_k5.json $R/part_k20.json $R/part_kall.json $R/part_k5_wide.json $R/part_k5_seeds34.json
    $R/part_logreg_wide.json $R/part_wide_cheap.json $R/part_k20_wide_scratch.json $R/part_k20_wide_finetune.json
    $R/part_rest_seeds34.json $R/part_kall_wide.json $R/part_k20_wide_scratch2.json $R/part_k1_wide.json"
$T --merge $ALL --select-seeds 0 1 2 --name part_select_all
# 3.: seeds 3 and 4 where a choice moved, and every missing convergence run
$T --ks all 20 1 5 --seed-list 0 1 2 3 4 --convergence-ks 5 all --chosen-from $R/part_select_all.json --name part_fill
$T --merge $ALL $R/part_fill.json --select-seeds 0 1 2 --name transfer_gain  # 4.
rm -f $R/part_*.json $R/part_*.csv $R/part_*.png
