"""The pure core: data models and deterministic state transitions. No I/O imports here."""
