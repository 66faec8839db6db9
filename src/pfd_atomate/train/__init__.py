"""Trainer backends (deepmd-kit, CHGNet), the foundation-model registry and the training job."""
