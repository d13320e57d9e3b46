"""The energy example's steps (run by workers as `energy.steps:...`)."""
