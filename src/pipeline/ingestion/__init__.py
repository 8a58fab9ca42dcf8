"""Accepting uploads: the document, its bytes and its plan of stage rows, in one statement."""
