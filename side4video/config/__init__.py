"""The configuration schema and loader (Side4Video-style YAML → validated DotMap)."""
from .loader import ConfigError, default_config, dump_config, load_config, parse_overrides, to_plain_dict
from .schema import LEGACY_KEYS, SCHEMA

__all__ = ["ConfigError", "default_config", "dump_config", "load_config", "parse_overrides", "to_plain_dict",
           "LEGACY_KEYS", "SCHEMA"]
