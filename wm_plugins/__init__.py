"""First-party plugins (importable as ``wm_plugins.<name>``), each registered through
the ``wm_framework`` entry-point group exactly like a third-party package."""
