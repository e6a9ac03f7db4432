"""``di3cl`` commands of data.sarsense (moved here in the restructure)."""

from ..data.sarsense import register_cli as register

__all__ = ["register"]
