"""mpi_inf_3dhp: MPI-INF-3DHP from VIBE's / TCMR's preprocessed files (see README.md)."""

from tfds_builders.mpi_inf_3dhp.mpi_inf_3dhp_dataset_builder import Builder

__all__ = ["Builder"]
