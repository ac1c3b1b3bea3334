"""Evaluation: metrics, the evaluate command, plots and reports. Never imports the trainer."""
