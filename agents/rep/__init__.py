"""The rep: a cell's agent (reference §6). See README.md."""
