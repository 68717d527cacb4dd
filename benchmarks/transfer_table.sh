#!/usr/bin/env bash
# Notebook 05's benchmark table (make bench-table): k = 1, 5, 20, all x 5 seeds, every method's learning rate chosen
# on validation from one grid, 3e-4 ... 3e-2 (C 1e-3 ... 1000 for the pixel baseline). These are the commands that made
# src/transferlab/results/transfer_gain.*, in order; every run seeds itself, so rerunning them gives the same numbers
# on the same machine and thread count. One process of one thread at a time (about 35 min of one core when quiet).
#
#   1. the first edition's table: seeds 0-2 on the grid 1e-3, 3e-3, 1e-2 (C 0.01, 0.1, 1), one part per k;
#   2. the grid widened by one point on each side, seeds 0-2: the fixed features and the pixel baseline (cheap) at
#      both new points everywhere; scratch and fine-tuning at both at k = 5, and elsewhere at the new point beyond the
#      edge they had chosen (scratch 3e-2 at every k; fine-tuning 3e-4 at k = 20, 3e-2 with the whole pool);
#   3. every rate chosen on the validation accuracy of seeds 0-2; seeds 3 and 4 run at the chosen rates, and scratch
#      with twice the steps (the convergence check, k = 5 and all) at its chosen rate;
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
$T --ks 20 all 1 $S --methods features logreg --lrs 3e-4 3e-2 --logreg-cs 1e-3 10 --name part_wide_cheap  # 2.
$T --ks 20 $S --methods scratch --lrs 3e-2 --name part_k20_wide_scratch
$T --ks 20 $S --methods finetune --lrs 3e-4 --name part_k20_wide_finetune
$T --ks all $S --methods scratch finetune --lrs 3e-2 --name part_kall_wide
$T --ks 1 $S --methods scratch --lrs 3e-2 --name part_k1_wide
REST="$R/part_k1.json $R/part_k20.json $R/part_kall.json $R/part_wide_cheap.json $R/part_k20_wide_scratch.json \
    $R/part_k20_wide_finetune.json $R/part_kall_wide.json $R/part_k1_wide.json"
$T --merge $REST --name part_select_rest  # 3.
$T --ks 20 all 1 --seed-list 3 4 --convergence-ks --chosen-from $R/part_select_rest.json --name part_rest_seeds34
$T --merge $R/part_select_rest.json $R/part_rest_seeds34.json --select-seeds 0 1 2 --name part_select_rest2
$T --ks all --seed-list 0 1 2 3 4 --convergence-ks all --chosen-from $R/part_select_rest2.json --name part_kall_converge
# the pixel baseline still chose the top C (10) at k = 5: C 100 and 1000 too (cheap), seeds 0-2, then seeds 3, 4 at
# the C chosen on the whole grid
$T --ks 5 20 all 1 $S --methods logreg --logreg-cs 100 1000 --name part_logreg_wide
ALL="$R/part_k5.json $R/part_k5_wide.json $R/part_k5_seeds34.json $REST $R/part_rest_seeds34.json \
    $R/part_kall_converge.json $R/part_logreg_wide.json"
$T --merge $ALL --select-seeds 0 1 2 --name part_select_all
$T --ks 5 20 all 1 --seed-list 3 4 --methods logreg --convergence-ks --chosen-from $R/part_select_all.json \
    --name part_logreg_seeds34
$T --merge $ALL $R/part_logreg_seeds34.json --select-seeds 0 1 2 --name transfer_gain  # 4.
rm -f $R/part_*.json $R/part_*.csv $R/part_*.png
