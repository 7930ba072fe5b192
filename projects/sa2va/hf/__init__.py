"""The released Hugging Face Sa2VA format: layout data (:mod:`.layout`),
sharded safetensors (:mod:`.shards`), import into / export from the
training model (:mod:`.convert`)."""
from .convert import (export_hf, hf_build_overrides, hf_model_cfg, load_hf_weights,
                      reset_token_rows)
from .layout import HF_LAYOUTS, HFLayout, read_hf_config, template_to_official
from .shards import HFWeights, save_sharded

__all__ = ['HF_LAYOUTS', 'HFLayout', 'HFWeights', 'export_hf', 'hf_build_overrides',
           'hf_model_cfg', 'load_hf_weights', 'read_hf_config', 'reset_token_rows',
           'save_sharded', 'template_to_official']
