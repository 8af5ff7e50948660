"""UperNet semantic segmentation on a pre-trained ViT, through mmsegmentation and mmengine.

- :mod:`segmentation.config`: the presets in ``configs/`` (ADE20K 512x512 160k for ViT-B / ViT-L, inheriting
  mmseg's MAE recipe; a tiny CPU preset) and what a run changes in them.
- :mod:`segmentation.backbone`: the checkpoint's encoder exported for mmseg's ``MAE`` backbone, and the
  report of mmseg's own load of it.
- :mod:`segmentation.train`: ``emae eval segment``: train, evaluate (mIoU, mAcc, aAcc), resume, records.
- :mod:`segmentation.synthetic`: ``emae data segmentation``: Fashion-MNIST scenes in ADE20K's layout.
- :mod:`segmentation.mmcv_ops`: the stand-in for mmcv's compiled ops under mmcv-lite.
- :mod:`segmentation.resume`: mmengine checkpoints that load with ``weights_only=True``.
"""
