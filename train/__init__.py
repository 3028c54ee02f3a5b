"""Training and accuracy: synthetic multi-task data, tasks and losses, training, metrics, checkpoints,
predictors and the float-vs-fixed accuracy report (docs/training.md)."""
