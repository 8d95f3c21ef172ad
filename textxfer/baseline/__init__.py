"""The cheap baseline: tokenization (jieba / words / characters), word2vec vectors averaged per text, and a
scikit-learn RandomForest (``BaselineClassifier``)."""
