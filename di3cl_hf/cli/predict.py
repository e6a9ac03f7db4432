"""``di3cl`` commands of inference.scene (moved here in the restructure)."""

from ..inference.scene import register_cli as register

__all__ = ["register"]
