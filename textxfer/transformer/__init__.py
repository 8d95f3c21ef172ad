"""Fine-tuning a BERT/RoBERTa-family encoder with the Hugging Face ``Trainer``: the bundled offline
encoders, the recipe and its strategies, training, devices, and the exported ONNX kind."""
