"""Training and fine-tuning of zoo models on COCO-format datasets (``edgeseg train``).

Modules, one job each (all import torch, so nothing here is imported by ``edgeseg --help``):

* ``matcher``  -- SparseInst-style bipartite matching of queries to ground-truth instances
* ``losses``   -- focal classification, dice + BCE masks, IoU-aware objectness
* ``data``     -- COCO samples -> augmented, normalised training batches
* ``schedule`` -- learning rate: linear warm-up then cosine decay
* ``state``    -- checkpoints with an embedded manifest, resumable training state
* ``trainer``  -- ``TrainConfig`` and the training loop with periodic val mask AP
"""
