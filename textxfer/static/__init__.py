"""The static-vector model kind: token vectors distilled from an encoder, averaged per text, and a linear head."""
