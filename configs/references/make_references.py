"""Writes the personalization references of configs/digits_personalize.yaml: the first four
nines of the digits world's held-out test split (real sklearn digits, 16x16, 8-bit gray PNG).

    .venv/bin/python configs/references/make_references.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

from doodl.digits import assets

DIGIT, COUNT = 9, 4
HERE = Path(__file__).resolve().parent

images, labels = assets.test_set()
picked = images[labels == DIGIT][:COUNT]  # (COUNT, 3, 16, 16) in [0, 1], gray repeated
for k, image in enumerate(picked):
    gray = (image[0].numpy() * 255).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(HERE / f"nine_{k}.png", optimize=True)
    print(HERE / f"nine_{k}.png")
