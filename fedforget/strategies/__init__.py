"""Federated orchestration: FedAvg over chosen sites and the client-removal protocol."""
