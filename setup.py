from setuptools import find_packages, setup

setup(
    name="menndl_py",
    version="0.1.0",
    description="Multi-node evolutionary neural networks for deep materials informatics",
    packages=find_packages(include=["menndl_py", "menndl_py.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.26", "scipy>=1.11", "torch>=2.1", "mpi4py>=4.0", "deap>=1.4.4", "scikit-learn>=1.4",
        "h5py>=3.10", "PyYAML>=6.0", "pandas>=2.1", "matplotlib>=3.8", "tqdm>=4.66",
    ],
    extras_require={"horovod": ["horovod==0.28.1"]},
    entry_points={"console_scripts": ["menndl = menndl_py.cli:main"]},
)
