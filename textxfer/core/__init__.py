"""What every model kind and every workflow shares: the ``Classifier`` contract, the manifest of a model
folder, run folders written atomically, configuration dataclasses, the one scorer, lazy imports."""
