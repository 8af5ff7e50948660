"""Object detection and instance segmentation on detectron2: ViTDet and ViT-FPN Mask R-CNN.

- ``configs/``: LazyConfig files (ViTDet Mask / Cascade Mask R-CNN with ViT-B and ViT-L, the ViT + FPN
  benchmarking setting, and CPU-sized presets on the Fashion-MNIST scenes).
- :mod:`detection.checkpoint`: the backbone hand-off and its load report.
- :mod:`detection.datasets`: COCO-format datasets registered by path.
- :mod:`detection.synthetic`: ``emae data detection``, the Fashion-MNIST scenes.
- :mod:`detection.train` and :mod:`detection.cli`: ``emae eval detect``.
"""
