"""fedforget: federated multi-site machine unlearning for MRI reconstruction."""

__version__ = "0.1.0"
