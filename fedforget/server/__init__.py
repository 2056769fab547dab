"""ServerApp: phases (train -> oracle -> unlearn -> evaluate), checkpoints, TensorBoard, report."""
