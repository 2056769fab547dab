"""ClientApp: which site this node is, its datasets, local train / evaluate / unlearning work."""
