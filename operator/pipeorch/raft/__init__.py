"""The Raft adapter: pysyncobj behind a small typed facade."""
