"""The configuration schema and loader (Side4Video-style YAML → typed, validated DotMap)."""
from ..errors import ConfigError
from .loader import (
                     FLAT_SCHEMA,
                     check_mapping,
                     config_section,
                     convert_value,
                     default_config,
                     dump_config,
                     load_config,
                     parse_overrides,
                     to_plain_dict,
)
from .schema import LEGACY_KEYS, SCHEMA

__all__ = ["ConfigError", "FLAT_SCHEMA", "check_mapping", "config_section", "convert_value", "default_config",
           "dump_config", "load_config", "parse_overrides", "to_plain_dict", "LEGACY_KEYS", "SCHEMA"]
