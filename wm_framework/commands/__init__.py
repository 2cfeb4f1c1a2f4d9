"""Command groups mounted by wm_framework.cli."""
