"""Image metrics: FID on Inception-v3 pool features, CMMD on CLIP image embeddings, CLIP score.

- `extractors.py`: the feature models, loaded only from local paths the user gives;
- `distances.py`: the numbers from features (FID's math is torchmetrics');
- `reference.py`: the real images' statistics, computed once and kept on disk;
- `folder.py`: image folders and prompt files, as `mmdit-scale eval-images` reads them;
- `demo_models.py`: tiny seeded feature models for the demo and the tests (not comparable to
  published numbers).
docs/metrics.md describes them. This package is single-process; the trainer spreads the work over
ranks and gathers the features (`mmdit_scale.train.image_eval`).
"""
