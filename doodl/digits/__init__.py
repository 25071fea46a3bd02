"""The built-in digits world: a tiny text-to-image Stable Diffusion, guidance models and a judge,
all trained by the project on scikit-learn's handwritten digits. Train with
``python -m doodl.digits.train``; load with ``doodl.digits.assets``."""
