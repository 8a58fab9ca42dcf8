"""Helpers shared by the tests, one job per module.

Test modules and conftest files import helpers from here, never from a conftest or from
another test module (``tests/unit/test_test_layout.py`` checks it); conftest files hold
only fixtures and pytest hooks.
"""
