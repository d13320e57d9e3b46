"""The ML example's steps (run by workers as `ml.steps:...`)."""
