"""A project in lightning-hydra-template's conventions, for the tests (tests/test_template_project.py)."""
