"""Integrations with other tools' own interfaces (lm-evaluation-harness, ...).

Each module here needs its tool's optional extra and imports it only when the module
itself is imported (:mod:`spectral_edit.integrations.lm_eval` needs the ``lmeval`` extra),
so importing this package costs nothing.
"""
