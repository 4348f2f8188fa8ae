"""Distillers: `keras.Model` subclasses that train a student from a teacher."""

from tfkd.distillers.base import Distiller  # noqa: F401
