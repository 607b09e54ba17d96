"""IFC (Hwang et al., "Video Instance Segmentation using Inter-Frame Communication
Transformers", NeurIPS 2021) on the model-family contract: see ``family.py``."""
