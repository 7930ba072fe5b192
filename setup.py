"""Installable package for the Sa2VA training plugin (``projects.sa2va``).

Compatible ranges, not pins: ``pip install -e .`` into an existing
environment keeps its torch (>= 2.5.1) and transformers (4.48 - 5.x). The two
tested sets live in ``requirements/current.txt`` (torch 2.14.1 +
transformers 5, the default of ``make setup``) and ``requirements/legacy.txt``
(the Sa2VA v1 stack: torch 2.5.1 + xtuner 0.2.0 + transformers 4.48.0,
``make setup-legacy``); README "Install".
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    'torch>=2.5.1',
    'torchvision>=0.20.1',
    'transformers>=4.48.0,<6',
    'tokenizers>=0.21',
    'safetensors>=0.4.3',
    'peft>=0.15',            # LoRA with trainable_token_indices
    'mmengine>=0.10.6,<0.11',
    'pycocotools>=2.0.7',
    'numpy>=1.24',
    'pillow>=10.0',
    'matplotlib>=3.7',
    'opencv-python>=4.8',    # video decoding, boundary F-measure
    'psutil>=5.9',           # benchmarks: memory of the process tree
]

EXTRAS_REQUIRE = {
    # the Sa2VA v1 stack: xtuner pins transformers 4.48.0, mmengine 0.10.6,
    # bitsandbytes 0.45.0 (tests compare the chat templates with xtuner's)
    'legacy': ['xtuner[deepspeed]>=0.2.0,<0.3'],
    'deepspeed': ['deepspeed>=0.16.2'],
    'qlora': ['bitsandbytes>=0.45.0'],
    'tensorboard': ['tensorboard>=2.14'],
    # coco-caption's scorers: METEOR (needs Java) for GCG and region captions
    'eval': ['pycocoevalcap>=1.2'],
    'dev': [
        'pytest>=8.0',
        'pytest-timeout>=2.3',
        'dashscope>=1.20',   # ships a real Qwen vocabulary (qwen.tiktoken)
        'pycocoevalcap>=1.2',  # the tests compare METEOR / CIDEr with it
    ],
}

setup(
    name='sa2va-plugin',
    version='0.1.0',
    description='Training framework for pixel-grounded multimodal models '
                '(InternVL + SAM2, the Sa2VA family) as an MMEngine plugin',
    packages=find_packages(include=['projects', 'projects.*']),
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
