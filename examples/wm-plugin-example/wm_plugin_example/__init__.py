"""An example third-party wm-framework plugin (copy this package to start your own)."""
