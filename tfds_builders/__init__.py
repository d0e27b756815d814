"""TFDS dataset builders of lmr_jax (array_record, built and read without TensorFlow).

Importing a builder module registers it with TFDS; `python -m lmr_jax.data.build NAME/CONFIG`
builds one.
"""
