"""Cross-validation of recipes on a folder of real pairs: seeded folds (``folds.py``)."""
