"""``di3cl`` commands of hub.push (moved here in the restructure)."""

from ..hub.push import register_cli as register

__all__ = ["register"]
