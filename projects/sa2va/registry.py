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
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

SCOPE = 'sa2va'

DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, scope=SCOPE,
    locations=['projects.sa2va.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE,
    locations=['projects.sa2va.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, scope=SCOPE,
    locations=['projects.sa2va.transforms'])
# Collate functions and other plain functions a config names by string.
FUNCTIONS = Registry(
    'function', parent=MMENGINE_FUNCTIONS, scope=SCOPE,
    locations=['projects.sa2va.datasets'])
MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope=SCOPE,
    locations=['projects.sa2va.models'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope=SCOPE,
    locations=['projects.sa2va.engine'])
METRICS = Registry(
    'metric', parent=MMENGINE_METRICS, scope=SCOPE,
    locations=['projects.sa2va.evaluation'])
EVALUATOR = Registry(
    'evaluator', parent=MMENGINE_EVALUATOR, scope=SCOPE,
    locations=['projects.sa2va.evaluation'])
