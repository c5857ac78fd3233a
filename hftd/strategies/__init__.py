"""Strategies: user code hosted by the strategy stage. Start from `base.Strategy`."""

from .base import Strategy

__all__ = ["Strategy"]
