"""``di3cl`` commands of hub.convert (moved here in the restructure)."""

from ..hub.convert import register_cli as register

__all__ = ["register"]
