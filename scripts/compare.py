#!/usr/bin/env python3
"""Compare the fine-tuned model with the word2vec + RandomForest baseline on one split.

The script form of ``textxfer compare`` (same flags, same function): for example

    python scripts/compare.py --data sample_data/reviews.csv --output runs/compare \\
        --finetune-max-train-samples 2000 --finetune-epochs 1 --finetune-min-steps 0
"""

import sys

from textxfer.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
