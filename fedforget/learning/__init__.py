"""Flower-free learning: local training steps, evaluation, audits, checkpoints, the plain FedAvg loop."""
