#!/bin/bash
# the 2 MB single-line file under nohup: stderr lines stamped with seconds since start
cd /work/wt26
start=$(date +%s.%N)
OMP_NUM_THREADS=1 PYTHONPATH=src nohup /usr/bin/time -v /work/main/.venv/bin/python -m gistify.cli compress /tmp/big_single_line.txt --keep 0.1 > /tmp/big.out 2> >(while IFS= read -r line; do printf '%6.1f %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$line"; done > /tmp/big.err)
echo "exit $?" >> /tmp/big.done
