"""``textxfer audit``: which labels are probably wrong, and other problems of the training and validation rows."""
