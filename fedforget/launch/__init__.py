"""Starting runs: the private simulation SuperLink, ``flwr run``, deployment processes, the real outcome."""
