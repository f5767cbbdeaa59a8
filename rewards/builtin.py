"""Imports every built-in reward module so that its ``@register_reward`` runs."""
