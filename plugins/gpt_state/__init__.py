"""Placeholder: this plugin is being written."""
