"""Test-wide setup: pytest puts this folder on ``sys.path`` (it holds a conftest), so helpers
shared by tests in several folders (:mod:`process_group`) import as top-level modules."""
