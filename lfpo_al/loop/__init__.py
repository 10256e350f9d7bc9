"""The active-learning loop: run state (record), one iteration, tracking."""
