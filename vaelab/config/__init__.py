"""Configuration: the YAML schema (`vaelab.config.schema`, re-exported here) and the builders that turn config
names into objects (`vaelab.config.registry` for component families, `vaelab.config.build` for models and
objectives). Importing this package loads only the schema, so the command line's parser and the trainer can use
it without building anything.
"""

from vaelab.config.schema import (
    RESUMABLE_KEYS,
    Config,
    DataConfig,
    EvalConfig,
    GapsConfig,
    ModelConfig,
    ObjectiveConfig,
    TrainConfig,
    apply_overrides,
    check_resume_changes,
    config_from_dict,
    load_config,
    yaml_number,
)
from vaelab.errors import ConfigError

__all__ = [
    "RESUMABLE_KEYS",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "GapsConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "TrainConfig",
    "apply_overrides",
    "check_resume_changes",
    "config_from_dict",
    "load_config",
    "yaml_number",
]
