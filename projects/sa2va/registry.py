"""Registries of the Sa2VA plugin.

Every registry is a child of the matching mmengine root registry, under the
scope ``sa2va``.  A config selects the plugin with ``default_scope = 'sa2va'``
and can then name a class by string (``type='RefCOCODataset'``), with the
scope prefix (``type='sa2va.RefCOCODataset'``) from any scope, or pass the
class object itself (``type=RefCOCODataset``, the Sa2VA habit); mmengine's
``build_from_cfg`` accepts all three.

``locations`` lists the modules that register into each registry, so that a
lookup by string imports them on first use: a config never needs
``custom_imports`` for the plugin's own classes.
"""
from mmengine import registry as mmengine_registry
from mmengine.registry import Registry

SCOPE = 'sa2va'


def _child(name: str, *locations: str) -> Registry:
    parent = getattr(mmengine_registry, name)
    return Registry(parent.name, parent=parent, scope=SCOPE,
                    locations=list(locations))


DATASETS = _child('DATASETS', 'projects.sa2va.datasets')
DATA_SAMPLERS = _child('DATA_SAMPLERS', 'projects.sa2va.datasets',
                       'projects.sa2va.models')
TRANSFORMS = _child('TRANSFORMS', 'projects.sa2va.transforms')
# Collate functions and other plain functions a config names by string
# (``collate_fn=dict(type='sa2va.sa2va_collate_fn')``: mmengine looks
# functions up without the default scope, so keep the ``sa2va.`` prefix).
FUNCTIONS = _child('FUNCTIONS', 'projects.sa2va.datasets',
                   'projects.sa2va.models')
MODELS = _child('MODELS', 'projects.sa2va.models')
HOOKS = _child('HOOKS', 'projects.sa2va.engine')
METRICS = _child('METRICS', 'projects.sa2va.evaluation')
EVALUATOR = _child('EVALUATOR', 'projects.sa2va.evaluation')
LOOPS = _child('LOOPS', 'projects.sa2va.engine')
# Registries the plugin does not extend yet: children exist so that
# building from the ``sa2va`` scope resolves to mmengine's classes quietly.
RUNNERS = _child('RUNNERS', 'projects.sa2va.engine')
RUNNER_CONSTRUCTORS = _child('RUNNER_CONSTRUCTORS')
STRATEGIES = _child('STRATEGIES')
MODEL_WRAPPERS = _child('MODEL_WRAPPERS')
WEIGHT_INITIALIZERS = _child('WEIGHT_INITIALIZERS')
OPTIMIZERS = _child('OPTIMIZERS')
OPTIM_WRAPPERS = _child('OPTIM_WRAPPERS', 'projects.sa2va.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('OPTIM_WRAPPER_CONSTRUCTORS')
PARAM_SCHEDULERS = _child('PARAM_SCHEDULERS', 'projects.sa2va.engine')
TASK_UTILS = _child('TASK_UTILS')
VISUALIZERS = _child('VISUALIZERS')
VISBACKENDS = _child('VISBACKENDS', 'projects.sa2va.engine')
LOG_PROCESSORS = _child('LOG_PROCESSORS')
INFERENCERS = _child('INFERENCERS')
