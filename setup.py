"""Session attribution: which steps of an app session drive conversion, at warehouse scale."""

from setuptools import find_packages, setup

setup(
    name="session-attribution",
    version="0.1.0",
    description="Sessionize clickstream with Spark, train a session transformer, attribute conversion to events",
    python_requires=">=3.10",
    packages=find_packages(include=["attribution", "attribution.*", "udfs", "udfs.*", "jobs", "jobs.*"]),
    # Ranges for clusters (any recent torch, CUDA or CPU); requirements.lock pins what was tested.
    install_requires=[
        "pyspark>=4.0,<5",
        "torch>=2.2",
        "pandas>=2.2,<3",
        "pyarrow>=15",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "PyYAML>=6",
        "safetensors>=0.4",
        "deltalake>=0.25",
        "scikit-learn>=1.4",
        "scipy>=1.11",  # the CI quantiles (attribution/statistics.py) and rank statistics
        # MLflow tracking and the model registry (attribution/tracking.py); the lock pins the full mlflow,
        # whose `mlflow ui` browses the local store
        "mlflow-skinny>=3.1,<4",
    ],
    extras_require={
        # a Spark Connect client (spark.remote: sc://..., or spark.api.mode: connect); see docs/connect.md
        "connect": ["grpcio>=1.76", "grpcio-status>=1.76", "googleapis-common-protos>=1.71", "zstandard>=0.25"],
        "test": [
            "pytest>=8",
            "chispa>=0.10",
            "hypothesis>=6",
            "ruff>=0.5",
            "captum>=0.7",
            "mypy>=1.10",
            "duckdb>=1.1",
            "polars>=1.20",
        ],
    },
)
