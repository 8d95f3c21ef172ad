"""The data layer: reading tables (CSV, TSV, JSON, JSONL, Parquet, hub datasets), the dataset and its
labels, and the saved train/validation/test split. Imports nothing of textxfer but ``errors``."""
