"""What a run leaves behind: results.json, report.md, figures, TensorBoard, multirun statistics, console table."""
