"""Rendering: a Diagnosis or a FitResult as terminal text, plain text or JSON."""
