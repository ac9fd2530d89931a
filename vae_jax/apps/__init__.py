"""What the VAE is for, as functions of a trained ``(model, params)``.

- ``generation``: samples at several temperatures, latent interpolations (linear, slerp),
  resampling a hierarchical model's finer groups;
- ``representation``: posterior means as features; linear probe and kNN against raw pixels;
- ``restoration``: denoising and inpainting of whole images as MAP estimates of x under the
  model's full likelihood on overlapping tile grids, scored by PSNR/SSIM next to the classical
  tools (``classical_restoration``: blur, total variation, non-local means, BM3D, biharmonic);
- ``compression``: lossless bits-back ANS coding of 8-bit images into real files;
- ``tiling``: whole images through fixed-size models.

Each module has a ``run_*`` function for the command line: it writes its files and returns a
dict of numbers. The cores are pure; files are written only by ``run_*`` (through ``vae_jax.images`` and
``vae_jax.outputs``).
"""

from vae_jax.apps import classical_restoration, compression, generation, representation, restoration, tiling

__all__ = ["classical_restoration", "compression", "generation", "representation", "restoration", "tiling"]
