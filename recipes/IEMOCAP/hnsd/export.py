#!/usr/bin/env python3
"""Exports a run of this recipe to a self-contained model folder (the same as ``hnsd export``).

> python export.py results/IEMOCAP/hnsd/fold1/1986 hnsd-iemocap-fold1

The best checkpoint by validation UA becomes ``hyperparams.yaml`` (with a ``Pretrainer``),
``model.ckpt``, ``normalizer.ckpt``, ``label_encoder.txt`` and ``custom_interface.py``; load it
with ``hnsd_sb.inference.EmotionRecognizer.from_folder`` or ``hnsd predict --model``.
"""

import sys

from hnsd_sb.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
