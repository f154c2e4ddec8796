"""Installs hnsd_sb, the HNSD speech emotion recognition plugin for SpeechBrain."""

from setuptools import find_packages, setup

setup(
    name="hnsd-sb",
    version="0.1.0",
    description="HNSD speech emotion recognition (Cao et al., ICASSP 2021) for SpeechBrain",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hnsd_sb", "hnsd_sb.*"]),
    package_data={"hnsd_sb": ["templates/*.yaml"]},
    python_requires=">=3.9",
    install_requires=[
        "speechbrain>=1.0.4",
        "torch>=2.5",  # Module.register_load_state_dict_pre_hook (HNSD reads older checkpoints)
        "torchaudio>=2.1",
        "hyperpyyaml>=1.2",
        "pandas>=1.5",
        "soundfile>=0.12",
        "matplotlib>=3.5",
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.6"],
        # hnsd export --format onnx and hnsd predict --backend onnx (see hnsd_sb/backends.py)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],
    },
    entry_points={"console_scripts": ["hnsd=hnsd_sb.cli:main"]},
    license="Apache-2.0",
)
