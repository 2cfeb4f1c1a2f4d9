"""The shipped recipes, installed as package data (``wm recipes list``, ``wm run NAME``)."""
