"""The ensemble kind: a weighted average of other models' probabilities, weights chosen on validation."""
