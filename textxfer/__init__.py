"""textxfer: text classification by transfer learning, with an honest baseline on the same split."""

from textxfer.errors import TextxferError

__all__ = ["TextxferError"]
