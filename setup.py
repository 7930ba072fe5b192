"""Installable package for the Sa2VA training plugin (``projects.sa2va``).

Pinned to the stack verified together (see README "Install"):
torch 2.5.1 + torchvision 0.20.1, xtuner[deepspeed] 0.2.0 (which pins
transformers 4.48.0 and mmengine 0.10.6), pycocotools.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    'torch==2.5.1',
    'torchvision==0.20.1',
    'xtuner[deepspeed]==0.2.0',
    'transformers==4.48.0',
    'mmengine==0.10.6',
    'pycocotools>=2.0.7',
    'safetensors>=0.4.3',
    'tokenizers>=0.21,<0.22',
    'numpy>=1.24',
    'pillow>=10.0',
    'matplotlib>=3.7',
    'opencv-python>=4.8',   # video decoding, boundary F-measure
    'psutil>=5.9',          # benchmarks: memory of the process tree
]

EXTRAS_REQUIRE = {
    'dev': [
        'pytest>=8.0',
        'pytest-timeout>=2.3',
    ],
    # coco-caption scorers (METEOR, ROUGE-L, PTB tokenizer; need Java) for
    # tools/test.py's caption and GCG figures
    'eval': ['pycocoevalcap>=1.2'],
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
