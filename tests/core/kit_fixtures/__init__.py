"""Small, deliberately broken backends the conformance kit must fail (see ``test_kit_catches.py``).

Not collected as tests: ``test_kit_catches.py`` puts ``tests/core`` on ``PYTHONPATH`` and runs the kit
with ``--dsrt-plugin kit_fixtures.backends:PLUGIN``.
"""
